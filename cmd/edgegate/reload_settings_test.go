package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// TestReloadAppliesProcessSettings: a reload applies the settings the
// process itself owns: a new pid_file is written and the old one removed, a
// new control_socket answers and the old one is gone, log.level takes
// effect at once, and watch switched on makes a changed file reload by
// itself.
func TestReloadAppliesProcessSettings(t *testing.T) {
	t.Parallel()
	www := newTLSUpstream(t, "www.e2e.test")
	news := newTLSUpstream(t, "new.e2e.test")
	listen, metrics := freeAddr(t), freeAddr(t)
	body := gatewayConfig(listen, metrics, www.ln.Addr().String(), "info", "json", "30s")
	p, cfg := startGateway(t, "pid_file: one.pid\ncontrol_socket: one.sock\n"+body, true)
	dir := filepath.Dir(cfg)
	pid := strconv.Itoa(p.cmd.Process.Pid) + "\n"
	if b, err := os.ReadFile(filepath.Join(dir, "one.pid")); err != nil || string(b) != pid {
		t.Fatalf("one.pid: %q, %v; want %q", b, err, pid)
	}

	next := "pid_file: two.pid\ncontrol_socket: two.sock\nwatch: true\n" +
		strings.Replace(body, "level: info", "level: debug", 1)
	writeFile(t, dir, "edgegate.yaml", next)
	p.signal(t, syscall.SIGHUP)
	p.stderr.waitJSON(t, "the reload", func(r map[string]any) bool {
		return r["msg"] == "configuration reloaded" && r["generation"] == 2.0
	})
	// The process applies its own settings once the gateway has reloaded.
	eventually.Within(t, waitLimit, func() error {
		if b, err := os.ReadFile(filepath.Join(dir, "two.pid")); err != nil || string(b) != pid {
			return fmt.Errorf("two.pid after the reload: %q, %v; want %q", b, err, pid)
		}
		for _, gone := range []string{"one.pid", "one.sock"} {
			if _, err := os.Stat(filepath.Join(dir, gone)); !os.IsNotExist(err) {
				return fmt.Errorf("%s after the reload moved it: %v; want it removed", gone, err)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "two.sock")); err != nil {
			return fmt.Errorf("two.sock: %v", err)
		}
		return nil
	})
	// The new socket answers; the answer proves the reload went through it.
	if stdout, stderr, code := runEdgegate(t, "reload", "--config", cfg); code != 0 || stdout != "reload: ok\n" {
		t.Fatalf("edgegate reload through two.sock: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// log.level debug: the noise of an open port is logged now.
	expectClosedSilently(t, listen, "new.e2e.test", news)
	p.stderr.waitJSON(t, "a debug line for the unknown name", func(r map[string]any) bool {
		return r["level"] == "DEBUG" && r["outcome"] == "closed_unknown_sni"
	})

	// watch: true, switched on by the reload: adding a vhost to the file is
	// enough.
	writeFile(t, dir, "edgegate.yaml", next+yamlf(`
  - name: new
    hosts: ["new.e2e.test"]
    mode: passthrough
    upstream: {address: %q}
`, news.ln.Addr().String()))
	p.stderr.waitJSON(t, "the watch's reload", func(r map[string]any) bool {
		return r["msg"] == "configuration reloaded" && r["generation"] == 4.0
	})
	expectProxied(t, listen, "new.e2e.test", news)
}

// TestSecondInstanceRefused: a second edgegate on an address the first
// holds exits 1 with the listener's FILE:LINE and "address already in
// use", as nginx and HAProxy refuse; the first keeps serving. With
// reuse_port on both, both run.
func TestSecondInstanceRefused(t *testing.T) {
	t.Parallel()
	www := newTLSUpstream(t, "www.e2e.test")
	listen := freeAddr(t)
	first, _ := startGateway(t, gatewayConfig(listen, freeAddr(t), www.ln.Addr().String(), "info", "json", "1s"), true)

	cfg := writeFile(t, t.TempDir(), "edgegate.yaml", gatewayConfig(listen, freeAddr(t), www.ln.Addr().String(), "info", "json", "1s"))
	_, stderr, code := runEdgegate(t, "run", "--config", cfg)
	want := fmt.Sprintf("%s:2: listen address %q: bind: address already in use", cfg, listen)
	if code != 1 || stderr != want+"\n" {
		t.Fatalf("second edgegate: exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}
	if !first.running() {
		t.Fatal("the first edgegate exited")
	}
	expectProxied(t, listen, "www.e2e.test", www)

	shared := freeAddr(t)
	withReuse := func() string {
		return strings.Replace(gatewayConfig(shared, freeAddr(t), www.ln.Addr().String(), "info", "json", "1s"),
			fmt.Sprintf("  - address: %q\n", shared), fmt.Sprintf("  - address: %q\n    reuse_port: true\n", shared), 1)
	}
	a, _ := startGateway(t, withReuse(), true)
	b, _ := startGateway(t, withReuse(), true)
	if !a.running() || !b.running() {
		t.Fatal("two edgegates with reuse_port did not both start")
	}
	expectProxied(t, shared, "www.e2e.test", www)
}
