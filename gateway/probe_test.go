package gateway

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/gateway/config"
)

// TestListeningInodes: the socket listening on an address is found in
// /proc/net/tcp or tcp6 and among this process's descriptors, for IPv4,
// IPv6 and the dual-stack wildcard; a probe of another port finds nothing.
func TestListeningInodes(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", ":0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("listen %s: %v", addr, err)
			}
			defer ln.Close()
			at := ln.Addr().(*net.TCPAddr).AddrPort()
			inodes, err := listeningInodes(at)
			if err != nil {
				t.Fatal(err)
			}
			if held, err := holdsSocket(os.Getpid(), inodes); err != nil || !held {
				t.Errorf("socket on %s: found %d inodes, held by this process: %v, %v; want true", at, len(inodes), held, err)
			}
			other := netip.AddrPortFrom(at.Addr(), at.Port()+1)
			if inodes, _ := listeningInodes(other); len(inodes) > 0 {
				if held, _ := holdsSocket(os.Getpid(), inodes); held {
					t.Errorf("a probe of %s finds this process's socket on %s", other, at)
				}
			}
		})
	}
}

func TestParseProcAddr(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the cases are written for a little-endian host")
	}
	for in, want := range map[string]string{
		"0100007F:20FB":                         "127.0.0.1:8443",
		"00000000:01BB":                         "0.0.0.0:443",
		"00000000000000000000000001000000:0050": "[::1]:80",
		"0000000000000000FFFF00000100007F:1F90": "[::ffff:127.0.0.1]:8080",
	} {
		got, err := parseProcAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("parseProcAddr(%q) = %v, %v; want %s (on a little-endian host)", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:XYZ", "01007F:0050", "0100007G:0050"} {
		if _, err := parseProcAddr(bad); err == nil {
			t.Errorf("parseProcAddr(%q) accepted", bad)
		}
	}
}

// TestProbe: Probe, in process, with this test as the running edgegate
// of pid_file.
func TestProbe(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "self.pid"), []byte(fmt.Sprint(os.Getpid())), 0o644)
	os.WriteFile(filepath.Join(dir, "nobody.pid"), []byte("not a pid\n"), 0o644)
	const vhosts = "vhosts: [{name: a, hosts: [a.example], mode: passthrough, upstream: {address: \"127.0.0.1:9\"}}]\n"
	for _, tc := range []struct {
		name, yaml string
		err, note  string
	}{
		{name: "free", yaml: "listen: [{address: \"127.0.0.1:0\"}]\n"},
		{name: "in use", yaml: fmt.Sprintf("listen: [{address: %q}]\n", busy.Addr()),
			err: fmt.Sprintf("c.yaml:1: listen address %s cannot be bound: address already in use", busy.Addr())},
		{name: "in use, bad pid file", yaml: fmt.Sprintf("pid_file: nobody.pid\nlisten: [{address: %q}]\n", busy.Addr()),
			err: "address already in use (pid_file: " + filepath.Join(dir, "nobody.pid") + " does not hold a process ID)"},
		{name: "held by the running edgegate", yaml: fmt.Sprintf("pid_file: self.pid\nlisten:\n  - address: %q\n", busy.Addr()),
			note: fmt.Sprintf("c.yaml:3: listen address %s is held by the running edgegate (pid %d)", busy.Addr(), os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse(filepath.Join(dir, "c.yaml"), []byte(tc.yaml+vhosts), nil)
			if err != nil {
				t.Fatal(err)
			}
			notes, warnings, err := Probe(cfg)
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("Probe: %v; want an error containing %q", err, tc.err)
				}
			case err != nil:
				t.Errorf("Probe: %v", err)
			}
			if got := strings.Join(notes, "\n"); !strings.HasSuffix(got, tc.note) || (tc.note == "") != (got == "") {
				t.Errorf("notes %q, want %q", notes, tc.note)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings %q, want none", warnings)
			}
		})
	}
}
