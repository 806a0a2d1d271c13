package bench

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// childEnv names the role a re-executed harness binary plays. The gotls
// baseline must run in its own process, pinned to the system CPU, so the
// harness starts its own binary (or test binary) again in that role.
const (
	childEnv       = "EDGEGATE_BENCH_CHILD"
	childConfigEnv = "EDGEGATE_BENCH_CONFIG"
	// childProfileEnv names the CPU profile file the child writes until
	// it is stopped (--profile).
	childProfileEnv = "EDGEGATE_BENCH_CPUPROFILE"
)

// RunChild plays the child role the environment asks for, if any, and then
// exits the process; it returns only when the process is not a child. The
// edgegate-bench main function and the bench package's TestMain call it
// first.
func RunChild() {
	switch os.Getenv(childEnv) {
	case "":
		return
	case "gotls":
		if err := runGoTLS(os.Getenv(childConfigEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "gotls:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "flood":
		if err := runFloodChild(); err != nil {
			fmt.Fprintln(os.Stderr, "flood:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "edgegate":
		if err := runGatewayChild(os.Getenv(childConfigEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "edgegate (profiled):", err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", childEnv, os.Getenv(childEnv))
		os.Exit(2)
	}
}

// runGoTLS is the bare crypto/tls baseline: the mtls job (TLS 1.2+, a client
// certificate verified against the CA, PROXY v2 to the upstream, copy both
// ways) with nothing else — no routing, no logging, no metrics. It is the
// best a Go gateway can do with the same certificates.
func runGoTLS(configFile string) error {
	b, err := os.ReadFile(configFile)
	if err != nil {
		return err
	}
	var c gotlsConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("parse %s: %w", configFile, err)
	}
	cert, err := tls.LoadX509KeyPair(c.ServerCert, c.ServerKey)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("no certificate in %s", c.CAFile)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}
	stopProfile, err := startProfile()
	if err != nil {
		return err
	}
	defer stopProfile()
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go goTLSServe(conn, cfg, c.Upstream)
	}
}

func goTLSServe(conn net.Conn, cfg *tls.Config, upstream string) {
	defer conn.Close()
	tc := tls.Server(conn, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		return
	}
	tc.SetDeadline(time.Time{})
	up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	hdr := proxyproto.HeaderProxyFromAddrs(2, conn.RemoteAddr(), conn.LocalAddr())
	if _, err := hdr.WriteTo(up); err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(up, tc)
		up.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(tc, up)
	tc.CloseWrite()
	wg.Wait()
}
