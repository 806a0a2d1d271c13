package gateway

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runHAProxy starts a real HAProxy with frontends (the configuration after
// its global and defaults sections) on listeners loopback ports, named
// fd@3, fd@4, ... in binds, and stops it when the test ends. As with
// nginx, the test opens the listening sockets and HAProxy inherits them, so
// a connection made before HAProxy is ready waits in the backlog. It
// returns the listeners' addresses.
func runHAProxy(t *testing.T, frontends string, listeners int) []string {
	t.Helper()
	bin := needBinary(t, "haproxy")
	dir := t.TempDir()
	var files []*os.File
	var addrs []string
	for range listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close() // HAProxy keeps the socket through f's descriptor
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
		addrs = append(addrs, ln.Addr().String())
	}
	conf := `global
    nbthread 1
defaults
    timeout connect 10s
    timeout client 10s
    timeout server 10s
` + frontends
	confFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// A configuration HAProxy refuses would leave the test's connections
	// waiting in a backlog nobody accepts; check it first.
	check := exec.Command(bin, "-c", "-f", confFile)
	check.ExtraFiles = files
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	log, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(bin, "-db", "-f", confFile)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = files // descriptors 3, 4, ... in HAProxy
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "haproxy.log"))
			t.Logf("haproxy output:\n%s", b)
		}
	})
	return addrs
}

// haproxyBundle writes the server certificate and key as the one PEM file
// HAProxy's crt takes.
func haproxyBundle(t *testing.T, p *pki) string {
	t.Helper()
	var b strings.Builder
	for _, f := range []string{p.certFile, p.keyFile} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	path := filepath.Join(t.TempDir(), "server.pem")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
