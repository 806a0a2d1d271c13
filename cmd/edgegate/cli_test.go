package main_test

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/edgegate/edgegate/gateway/testpki"
)

func TestVersion(t *testing.T) {
	stdout, stderr, code := runEdgegate(t, "version")
	if code != 0 {
		t.Fatalf("edgegate version exited %d; stderr: %s", code, stderr)
	}
	want := regexp.MustCompile(`^edgegate \S+ \(` + regexp.QuoteMeta(runtime.Version()) + `, ` + runtime.GOOS + `/` + runtime.GOARCH + `\)\n$`)
	if !want.MatchString(stdout) {
		t.Errorf("edgegate version printed %q; want one line matching %s", stdout, want)
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		code      int
		complaint string // expected on stderr before the usage
	}{
		{args: nil, code: 2},
		{args: []string{"launch"}, code: 2, complaint: `edgegate: unknown command "launch"`},
		{args: []string{"--config", "x.yaml"}, code: 2, complaint: `edgegate: unknown command "--config"`},
		{args: []string{"check", "--config", "x.yaml", "extra"}, code: 2, complaint: `unexpected argument "extra"`},
		{args: []string{"run", "--bogus"}, code: 2, complaint: "flag provided but not defined: -bogus"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			stdout, stderr, code := runEdgegate(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing (usage errors go to stderr)", stdout)
			}
			if !strings.Contains(stderr, tc.complaint) {
				t.Errorf("stderr %q does not say %q", stderr, tc.complaint)
			}
			if tc.complaint == "" || strings.HasPrefix(tc.complaint, "edgegate: unknown") {
				if !strings.Contains(stderr, "usage:") || !strings.Contains(stderr, "edgegate check --config FILE") {
					t.Errorf("stderr does not show the usage:\n%s", stderr)
				}
			}
		})
	}
	stdout, _, code := runEdgegate(t, "help")
	if code != 0 || !strings.Contains(stdout, "edgegate run --config FILE") {
		t.Errorf("edgegate help: exit %d, stdout %q; want 0 and the usage", code, stdout)
	}
}

// checkPKI writes a server certificate and a CA bundle into dir, as
// app.crt, app.key and clients-ca.crt, and returns the SPKI pin of a client
// certificate in hex.
func checkPKI(t *testing.T, dir string) (pin string) {
	t.Helper()
	ca, err := testpki.NewCA("check test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("app.e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := testpki.WritePEM(dir, "app", srv); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "clients-ca.crt", string(ca.PEM))
	cli, err := ca.Client("pinned client")
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(testpki.SPKISHA256(cli.Leaf))
}

// badPKI writes, next to checkPKI's files, what check should warn about or
// refuse: wild.crt/.key for *.wild.e2e.test, a CA's own certificate and key
// as ca-as-server.crt/.key, app's key readable by every user as open.key,
// and session ticket keys readable by every user as open-tickets.
func badPKI(t *testing.T, dir string) {
	t.Helper()
	ca, err := testpki.NewCA("check test CA 2")
	if err != nil {
		t.Fatal(err)
	}
	wild, err := ca.Server("*.wild.e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := testpki.WritePEM(dir, "wild", wild); err != nil {
		t.Fatal(err)
	}
	if _, _, err := testpki.WritePEM(dir, "ca-as-server", tls.Certificate{Certificate: [][]byte{ca.Cert.Raw}, PrivateKey: ca.Key}); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dir, "app.key"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"open.key": key, "open-tickets": make([]byte, 32)} {
		p := writeFile(t, dir, name, string(b))
		if err := os.Chmod(p, 0o644); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
}

// routeRows returns the route table rows of check's output, as fields.
func routeRows(stdout string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(stdout, "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(l, "warning:") && !strings.HasPrefix(l, "note:") && !strings.HasSuffix(l, ": ok") {
			rows = append(rows, f)
		}
	}
	return rows
}

// warningLines returns check's warnings, except the one about the built-in
// Cloudflare CA nearing its end (2029-11-01): that one depends on the day
// the test runs, not on the file.
func warningLines(stdout string) []string {
	var ws []string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(l, "warning: ") && !strings.HasPrefix(l, "warning: the built-in Cloudflare origin-pull CA expires") {
			ws = append(ws, l)
		}
	}
	return ws
}

func TestCheckPrintsRoutes(t *testing.T) {
	dir := t.TempDir()
	checkPKI(t, dir)
	// Certificate paths are relative: they resolve against the config's
	// folder, while the binary runs in another one.
	cfg := writeFile(t, dir, "good.yaml", yamlf(`
listen:
  - address: "127.0.0.1:0"
unmatched: close
vhosts:
  - name: www
    hosts: ["www.e2e.test", "*.static.e2e.test"]
    mode: passthrough
    upstream: {address: "127.0.0.1:9001", proxy_protocol: v1}
  - name: app
    hosts: ["App.E2E.test"]
    mode: mtls
    tls:
      certificates: [{cert: app.crt, key: app.key}]
    client_auth: {ca: clients-ca.crt}
    upstream: {address: "unix:/run/app.sock"}
`))
	stdout, stderr, code := runEdgegate(t, "check", "--config", cfg)
	if code != 0 {
		t.Fatalf("check exited %d; stderr: %s", code, stderr)
	}
	if first := strings.SplitN(stdout, "\n", 2)[0]; first != cfg+": ok" {
		t.Errorf("first line %q, want %q", first, cfg+": ok")
	}
	rows := routeRows(stdout)
	want := [][]string{
		{"HOST", "VHOST", "MODE", "UPSTREAM", "PROXY"},
		{"www.e2e.test", "www", "passthrough", "127.0.0.1:9001", "v1"},
		{"*.static.e2e.test", "www", "passthrough", "127.0.0.1:9001", "v1"},
		{"app.e2e.test", "app", "mtls", "unix:/run/app.sock", "v2"}, // host normalised, proxy_protocol defaulted
		{"(no", "SNI", "or", "unknown)", "close"},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("route table:\n%s\nwant rows %v", stdout, want)
	}
	if ws := warningLines(stdout); len(ws) != 0 {
		t.Errorf("unexpected warnings for a config with its own client CA: %q", ws)
	}
	if stderr != "" {
		t.Errorf("stderr %q, want nothing", stderr)
	}
}

// listenReusePort listens on a free loopback address with SO_REUSEPORT, as
// edgegate does.
func listenReusePort(t *testing.T) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestCheckAddressInUse: check refuses, at its line, a listen or metrics
// address that run could not bind, unless the socket on it belongs to the
// running edgegate named by pid_file (here this test process, which holds
// the socket): that is the normal state when check runs before a reload.
// A socket shared with SO_REUSEPORT does not stop run, so it is a warning.
func TestCheckAddressInUse(t *testing.T) {
	busy, err := net.Listen("tcp", freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	shared := listenReusePort(t)
	// A process that is running but holds no socket: a pid_file naming it
	// must not excuse a socket held by someone else.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()

	dir := t.TempDir()
	writeFile(t, dir, "self.pid", fmt.Sprintf("%d\n", os.Getpid()))
	writeFile(t, dir, "other.pid", fmt.Sprintf("%d\n", other.Process.Pid))
	const vhosts = `vhosts:
  - name: www
    hosts: ["www.e2e.test"]
    mode: passthrough
    upstream: {address: "127.0.0.1:9001"}
`
	for _, tc := range []struct {
		name, yaml string
		line       int    // of the error; 0: check passes
		msg        string // in the error, or in a note or warning check prints ("@" for the file)
	}{
		{
			name: "listen address in use",
			yaml: fmt.Sprintf("listen:\n  - address: %q\n  - address: %q\n", freeAddr(t), busy.Addr()) + vhosts,
			line: 3,
			msg:  fmt.Sprintf("listen address %s cannot be bound: address already in use", busy.Addr()),
		},
		{
			name: "metrics address in use",
			yaml: fmt.Sprintf("listen: [{address: %q}]\nmetrics:\n  listen: %q\n", freeAddr(t), busy.Addr()) + vhosts,
			line: 3,
			msg:  fmt.Sprintf("metrics.listen %s cannot be bound: address already in use", busy.Addr()),
		},
		{
			name: "in use, not by the process in pid_file",
			yaml: fmt.Sprintf("pid_file: other.pid\nlisten: [{address: %q}]\n", busy.Addr()) + vhosts,
			line: 2,
			msg:  fmt.Sprintf("listen address %s cannot be bound: address already in use, not by the running edgegate (pid %d)", busy.Addr(), other.Process.Pid),
		},
		{
			name: "held by the running edgegate",
			yaml: fmt.Sprintf("pid_file: self.pid\nlisten: [{address: %q}]\nmetrics: {listen: %q}\n", busy.Addr(), shared.Addr()) + vhosts,
			msg:  fmt.Sprintf("note: %s:2: listen address %s is held by the running edgegate (pid %d)", "@", busy.Addr(), os.Getpid()),
		},
		{
			name: "shared with SO_REUSEPORT",
			yaml: fmt.Sprintf("listen: [{address: %q, reuse_port: true}]\n", shared.Addr()) + vhosts,
			msg:  fmt.Sprintf("warning: %s:1: listen address %s is also held by another process's socket that shares it (SO_REUSEPORT, same user)", "@", shared.Addr()),
		},
		{
			// Without reuse_port run opens no shared socket, so it would
			// fail: check refuses.
			name: "shared but not reuse_port",
			yaml: fmt.Sprintf("listen: [{address: %q}]\n", shared.Addr()) + vhosts,
			line: 1,
			msg:  fmt.Sprintf("listen address %s cannot be bound: address already in use", shared.Addr()),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.yaml)
			stdout, stderr, code := runEdgegate(t, "check", "--config", cfg)
			if tc.line == 0 {
				want := strings.Replace(tc.msg, "@", cfg, 1)
				if code != 0 || !strings.HasPrefix(stdout, cfg+": ok\n") || !strings.Contains(stdout, "\n"+want) {
					t.Errorf("exit %d, stdout:\n%s\nstderr: %s\nwant 0, ok and the line %q", code, stdout, stderr, want)
				}
				return
			}
			at := fmt.Sprintf("%s:%d: ", cfg, tc.line)
			if code != 1 || stdout != "" || !strings.HasPrefix(stderr, at) || !strings.Contains(stderr, tc.msg) {
				t.Errorf("exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, at+tc.msg)
			}
		})
	}
}

// TestCheckAddressNotHere: an address this host does not have cannot be
// bound; check says so at its line.
func TestCheckAddressNotHere(t *testing.T) {
	const addr = "192.0.2.1:18443" // TEST-NET-1
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Skipf("this host can bind %s (ip_nonlocal_bind?)", addr)
	}
	cfg := writeFile(t, t.TempDir(), "edgegate.yaml", yamlf(`
listen:
  - address: %q
vhosts:
  - {name: www, hosts: [www.e2e.test], mode: passthrough, upstream: {address: "127.0.0.1:9001"}}
`, addr))
	_, stderr, code := runEdgegate(t, "check", "--config", cfg)
	if want := cfg + ":2: listen address " + addr + " cannot be bound: cannot assign requested address\n"; code != 1 || stderr != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}
}

// TestCheckWhileRunning: `edgegate check` on the configuration of a
// running edgegate, before a reload, passes; its addresses are in use, by
// that process.
func TestCheckWhileRunning(t *testing.T) {
	listen, metrics := freeAddr(t), freeAddr(t)
	p, cfg := startGateway(t, "pid_file: edgegate.pid\n"+gatewayConfig(listen, metrics, "127.0.0.1:9", "info", "json", "30s"), true)
	stdout, stderr, code := runEdgegate(t, "check", "--config", cfg)
	pid := p.cmd.Process.Pid
	for _, want := range []string{
		cfg + ": ok\n",
		fmt.Sprintf("note: %s:3: listen address %s is held by the running edgegate (pid %d)\n", cfg, listen, pid),
		fmt.Sprintf("note: %s:5: metrics.listen %s is held by the running edgegate (pid %d)\n", cfg, metrics, pid),
	} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("check while edgegate runs: exit %d, stdout:\n%s\nstderr: %s\nwant 0 and %q", code, stdout, stderr, want)
		}
	}
}

func TestCheckWarnings(t *testing.T) {
	dir := t.TempDir()
	pin := checkPKI(t, dir)
	badPKI(t, dir)
	for _, tc := range []struct {
		name  string
		yaml  string
		want  [][]string // each warning must contain all of its strings
		lines []int      // and start with FILE:LINE of these lines
	}{
		{
			name: "shared Cloudflare CA without pins",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls: {certificates: [{cert: app.crt, key: app.key}]}
    client_auth: {ca: cloudflare}
    upstream: {address: "127.0.0.1:9002"}
`,
			want:  [][]string{{`vhost "app"`, "shared origin-pull CA", "without spki_sha256 pins", "any Cloudflare customer", "pin it"}},
			lines: []int{7},
		},
		{
			name: "Cloudflare CA by default, without pins",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls: {certificates: [{cert: app.crt, key: app.key}]}
    upstream: {address: "127.0.0.1:9002"}
`,
			want:  [][]string{{`vhost "app"`, "without spki_sha256 pins", "any Cloudflare customer"}},
			lines: []int{3},
		},
		{
			name: "shared Cloudflare CA with a pin",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls: {certificates: [{cert: app.crt, key: app.key}]}
    client_auth: {ca: cloudflare, spki_sha256: ["` + pin + `"]}
    upstream: {address: "127.0.0.1:9002"}
`,
		},
		{
			name: "passthrough and mtls share an upstream",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: www
    hosts: ["www.e2e.test"]
    mode: passthrough
    upstream: {address: "127.0.0.1:9001"}
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls: {certificates: [{cert: app.crt, key: app.key}]}
    client_auth: {ca: cloudflare, spki_sha256: ["` + pin + `"]}
    upstream: {address: "127.0.0.1:9001"}
`,
			want:  [][]string{{`passthrough vhost "www" and mtls vhost "app" share upstream 127.0.0.1:9001`, "SNI for www.e2e.test", "Host header"}},
			lines: []int{6},
		},
		{
			name: "PROXY v2 with TLS facts to a TLS upstream",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls: {certificates: [{cert: app.crt, key: app.key}]}
    client_auth: {ca: clients-ca.crt}
    upstream:
      address: "127.0.0.1:9002"
      tls: {ca: clients-ca.crt, server_name: origin.e2e.test}
`,
			want:  [][]string{{`vhost "app" sends a PROXY v2 header`, "108 bytes", "upstream.proxy_protocol: v1"}},
			lines: []int{8},
		},
		{
			name: "PROXY v1 to a TLS upstream",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls: {certificates: [{cert: app.crt, key: app.key}]}
    client_auth: {ca: clients-ca.crt}
    upstream:
      address: "127.0.0.1:9002"
      proxy_protocol: v1
      tls: {ca: clients-ca.crt, server_name: origin.e2e.test}
`,
		},
		{
			name: "hosts its certificates do not cover",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts:
      - "app.e2e.test"
      - "other.e2e.test"
      - "*.e2e.test"
      - "*.wild.e2e.test"
      - "x.wild.e2e.test"
    mode: mtls
    tls: {certificates: [{cert: app.crt, key: app.key}, {cert: wild.crt, key: wild.key}]}
    client_auth: {ca: clients-ca.crt}
    upstream: {address: "127.0.0.1:9002"}
`,
			want: [][]string{
				{`vhost "app": host "other.e2e.test" is not covered by any of its certificates`, "app.crt names app.e2e.test; wild.crt names *.wild.e2e.test"},
				{`vhost "app": host "*.e2e.test" is not covered`, "a wildcard host needs a certificate for *.e2e.test"},
			},
			lines: []int{6, 7},
		},
		{
			name: "key and ticket keys readable by every user",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls:
      certificates:
        - cert: app.crt
          key: open.key
      session_ticket_keys: open-tickets
    client_auth: {ca: clients-ca.crt}
    upstream: {address: "127.0.0.1:9002"}
`,
			want: [][]string{
				{`vhost "app": tls.certificates: key open.key is readable by every user (mode 0644)`},
				{`vhost "app": tls.session_ticket_keys: open-tickets is readable by every user (mode 0644)`},
			},
			lines: []int{9, 10},
		},
		{
			name: "CA certificate given as the server's",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls:
      certificates:
        - {cert: ca-as-server.crt, key: ca-as-server.key}
    client_auth: {ca: clients-ca.crt}
    upstream: {address: "127.0.0.1:9002"}
`,
			want: [][]string{
				{`vhost "app": tls.certificates: ca-as-server.crt is a CA certificate (CN=check test CA 2`, "not a server certificate"},
				{`host "app.e2e.test" is not covered`, "ca-as-server.crt names no DNS name"},
			},
			lines: []int{8, 4},
		},
		{
			name: "server certificate given as the client CA",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls: {certificates: [{cert: app.crt, key: app.key}]}
    client_auth:
      ca: app.crt
    upstream: {address: "127.0.0.1:9002"}
`,
			want:  [][]string{{`vhost "app": client_auth.ca: app.crt holds CN=app.e2e.test`, "which is not a CA certificate"}},
			lines: []int{8},
		},
		{
			name: "zero timeout that means the default",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
timeouts:
  idle: 0s
vhosts:
  - {name: www, hosts: [www.e2e.test], mode: passthrough, upstream: {address: "127.0.0.1:9001"}}
`,
			want:  [][]string{{"timeouts.idle: 0s means the default, 5m; write the default or remove the key"}},
			lines: []int{3},
		},
		{
			name: "eBPF interface missing, not required",
			yaml: `
listen: [{address: "127.0.0.1:0"}]
ebpf:
  enabled: true
  interfaces:
    - lo
    - eg-missing0
vhosts:
  - {name: www, hosts: [www.e2e.test], mode: passthrough, upstream: {address: "127.0.0.1:9001"}}
`,
			want:  [][]string{{`ebpf.interfaces: no interface "eg-missing0" on this host: run would start without the eBPF guard`}},
			lines: []int{6},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml", yamlf("%s", tc.yaml))
			stdout, stderr, code := runEdgegate(t, "check", "--config", cfg)
			if code != 0 {
				t.Fatalf("check exited %d (warnings are not errors); stderr: %s", code, stderr)
			}
			if !strings.HasPrefix(stdout, cfg+": ok\n") {
				t.Errorf("stdout does not start with %q:\n%s", cfg+": ok", stdout)
			}
			ws := warningLines(stdout)
			if len(ws) != len(tc.want) {
				t.Fatalf("got %d warnings, want %d:\n%s", len(ws), len(tc.want), stdout)
			}
			for i, parts := range tc.want {
				for _, p := range parts {
					if !strings.Contains(ws[i], p) {
						t.Errorf("warning %q does not say %q", ws[i], p)
					}
				}
				if at := fmt.Sprintf("warning: %s:%d: ", cfg, tc.lines[i]); !strings.HasPrefix(ws[i], at) {
					t.Errorf("warning %q does not start with %q", ws[i], at)
				}
			}
		})
	}
}

// checkErr is the one line check prints on stderr for a broken file.
var checkErr = regexp.MustCompile(`^(.+):(\d+): (.+)\n$`)

func TestCheckBrokenConfig(t *testing.T) {
	dir := t.TempDir()
	checkPKI(t, dir)
	badPKI(t, dir)
	const www = `
  - name: www
    hosts: ["www.e2e.test"]
    mode: passthrough
    upstream: {address: "127.0.0.1:9001"}
`
	for _, tc := range []struct {
		name string
		yaml string // the line with the error carries the comment "#!"
		msg  []string
	}{
		{
			name: "unknown top-level key",
			yaml: "listen: [{address: \"127.0.0.1:0\"}]\ncolour: blue #!\nvhosts:" + www,
			msg:  []string{`unknown key "colour"`},
		},
		{
			name: "unknown vhost key",
			yaml: "listen: [{address: \"127.0.0.1:0\"}]\nvhosts:" + www + "    upstreams: [] #!\n",
			msg:  []string{`unknown key "upstreams"`},
		},
		{
			name: "bad mode",
			yaml: `listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: www
    hosts: ["www.e2e.test"]
    mode: tunnel #!
    upstream: {address: "127.0.0.1:9001"}
`,
			msg: []string{`vhost "www"`, `mode "tunnel"`, "passthrough or mtls"},
		},
		{
			name: "bad duration",
			yaml: "listen: [{address: \"127.0.0.1:0\"}]\ntimeouts:\n  idle: 5m\n  drain: soon #!\nvhosts:" + www,
			msg:  []string{`"soon" is not a duration`},
		},
		{
			name: "wrong type",
			yaml: `listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: www
    hosts: www.e2e.test #!
    mode: passthrough
    upstream: {address: "127.0.0.1:9001"}
`,
			msg: []string{"wrong type"},
		},
		{
			name: "key indented too far",
			yaml: `listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: www
    hosts: ["www.e2e.test"]
      mode: passthrough #!
    upstream: {address: "127.0.0.1:9001"}
`,
			msg: []string{"did not find expected key"},
		},
		{
			name: "bad upstream port",
			yaml: `listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: www
    hosts: ["www.e2e.test"]
    mode: passthrough
    upstream: #!
      address: "127.0.0.1:99999"
`,
			msg: []string{`upstream.address "127.0.0.1:99999"`, "bad port"},
		},
		{
			name: "bad log format",
			yaml: "listen: [{address: \"127.0.0.1:0\"}]\nlog:\n  level: debug\n  format: xml #!\nvhosts:" + www,
			msg:  []string{`log.format "xml"`},
		},
		{
			name: "host served twice",
			yaml: "listen: [{address: \"127.0.0.1:0\"}]\nvhosts:" + www + `  - name: www2
    hosts:
      - "other.e2e.test"
      - "WWW.e2e.test." #!
    mode: passthrough
    upstream: {address: "127.0.0.1:9003"}
`,
			msg: []string{`"WWW.e2e.test."`, `already served by vhost "www"`},
		},
		{
			name: "missing certificate file",
			yaml: `listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls:
      certificates:
        - {cert: app.crt, key: app.key}
        - {cert: missing.crt, key: app.key} #!
    client_auth: {ca: clients-ca.crt}
    upstream: {address: "127.0.0.1:9002"}
`,
			msg: []string{`vhost "app"`, "missing.crt", "no such file"},
		},
		{
			name: "key of another certificate",
			yaml: `listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls:
      certificates:
        - {cert: app.crt, key: app.key}
        - cert: app.crt #!
          key: wild.key
    client_auth: {ca: clients-ca.crt}
    upstream: {address: "127.0.0.1:9002"}
`,
			msg: []string{`vhost "app"`, "cert app.crt, key wild.key", "private key does not match the certificate"},
		},
		{
			name: "eBPF interface missing, required",
			yaml: "listen: [{address: \"127.0.0.1:0\"}]\nebpf:\n  enabled: true\n  required: true\n  interfaces:\n    - lo\n    - eg-missing0 #!\nvhosts:" + www,
			msg:  []string{`ebpf.interfaces: no interface "eg-missing0" on this host, and ebpf.required is true`},
		},
		{
			name: "missing client CA file",
			yaml: `listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls: {certificates: [{cert: app.crt, key: app.key}]}
    client_auth:
      ca: nowhere.pem #!
    upstream: {address: "127.0.0.1:9002"}
`,
			msg: []string{`vhost "app"`, "client_auth.ca", "nowhere.pem"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantLine := 0
			for i, l := range strings.Split(tc.yaml, "\n") {
				if strings.HasSuffix(l, "#!") {
					wantLine = i + 1
				}
			}
			if wantLine == 0 {
				t.Fatal("test case has no line marked #!")
			}
			cfg := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.yaml)
			stdout, stderr, code := runEdgegate(t, "check", "--config", cfg)
			if code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			m := checkErr.FindStringSubmatch(stderr)
			if m == nil {
				t.Fatalf("stderr %q is not one line FILE:LINE: message", stderr)
			}
			if m[1] != cfg {
				t.Errorf("error names file %q, want %q", m[1], cfg)
			}
			if line, _ := strconv.Atoi(m[2]); line != wantLine {
				t.Errorf("error at line %d, want %d: %s", line, wantLine, stderr)
			}
			for _, s := range tc.msg {
				if !strings.Contains(m[3], s) {
					t.Errorf("message %q does not say %q", m[3], s)
				}
			}
		})
	}
}
