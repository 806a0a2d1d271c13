package main_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// withKeys puts top-level keys in front of a configuration.
func withKeys(keys, cfg string) string { return keys + cfg }

// newVHost is a passthrough vhost new.e2e.test to up, to append to
// gatewayConfig's vhosts.
func newVHost(up *tlsUpstream) string {
	return yamlf(`
  - name: new
    hosts: ["new.e2e.test"]
    mode: passthrough
    upstream: {address: %q}
`, up.ln.Addr().String())
}

// reloadRecords counts the process's own records of reloads.
func reloadRecords(t *testing.T, p *gateProc) (ok, refused int) {
	t.Helper()
	for _, r := range p.stderr.records(t) {
		switch r["msg"] {
		case "configuration reloaded":
			ok++
		case "reload refused; keeping the running configuration":
			refused++
		}
	}
	return ok, refused
}

// TestReloadCommand: `edgegate reload` through the control socket reports
// the running process's answer. A good change is live when it exits 0; a
// file that does not load, or that loads but that the process refuses (a
// new listener on an address in use), exits 1 with the process's FILE:LINE
// reason, and the process counts the refusal as it would a SIGHUP's; a new
// metrics address and log format apply in place, and what needs a restart
// is named. Once the process has stopped, reload fails.
func TestReloadCommand(t *testing.T) {
	t.Parallel()
	www := newTLSUpstream(t, "www.e2e.test")
	news := newTLSUpstream(t, "new.e2e.test")
	listen, metrics := freeAddr(t), freeAddr(t)
	keys := "control_socket: control.sock\npid_file: edgegate.pid\n"
	base := withKeys(keys, gatewayConfig(listen, metrics, www.ln.Addr().String(), "info", "json", "30s"))
	p, cfg := startGateway(t, base, true)
	dir := filepath.Dir(cfg)
	expectClosedSilently(t, listen, "new.e2e.test", news)

	// A good change.
	added := base + newVHost(news)
	writeFile(t, dir, "edgegate.yaml", added)
	stdout, stderr, code := runEdgegate(t, "reload", "--config", cfg)
	if code != 0 || stdout != "reload: ok\n" || stderr != "" {
		t.Fatalf("edgegate reload: exit %d, stdout %q, stderr %q; want 0 and \"reload: ok\"", code, stdout, stderr)
	}
	// No wait: the answer came after the swap.
	expectProxied(t, listen, "new.e2e.test", news)
	expectProxied(t, listen, "www.e2e.test", www)
	if code, h := getHealthz(t, metrics); code != 200 || h.Generation != 2 {
		t.Fatalf("/healthz after the reload: %d %+v, want generation 2", code, h)
	}

	// A file that does not load: the process is asked all the same and
	// refuses it, so the refusal is counted where a SIGHUP's would be, and
	// the command prints the FILE:LINE.
	broken, line := brokenConfig(added)
	writeFile(t, dir, "edgegate.yaml", broken)
	stdout, stderr, code = runEdgegate(t, "reload", "--config", cfg)
	want := fmt.Sprintf("edgegate reload: error: %s:%d: ", cfg, line)
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, `unknown key "proxy_protocl"`) {
		t.Fatalf("edgegate reload with a broken file: exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, want)
	}
	// The log line is written before the answer, but read from the
	// process's stderr on the test's own time.
	eventually.Within(t, waitLimit, func() error {
		if ok, refused := reloadRecords(t, p); ok != 1 || refused != 1 {
			return fmt.Errorf("the process logged %d reloads and %d refusals; want 1 and 1", ok, refused)
		}
		return nil
	})

	// A file that loads but that the running process refuses: a new
	// listener on an address another process holds.
	held, err := net.Listen("tcp", freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	first := fmt.Sprintf("  - address: %q\n", listen)
	second := fmt.Sprintf("  - address: %q\n", held.Addr())
	taken := strings.Replace(added, first, first+second, 1)
	if taken == added {
		t.Fatal("test bug: the listen line was not found in the config")
	}
	writeFile(t, dir, "edgegate.yaml", taken)
	stdout, stderr, code = runEdgegate(t, "reload", "--config", cfg)
	heldLine := strings.Count(taken[:strings.Index(taken, second)], "\n") + 1
	want = fmt.Sprintf("edgegate reload: error: %s:%d: listen address %q: bind: address already in use\n", cfg, heldLine, held.Addr())
	if code != 1 || stdout != "" || stderr != want {
		t.Fatalf("edgegate reload refused by the process: exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, want)
	}
	eventually.Within(t, waitLimit, func() error {
		if _, refused := reloadRecords(t, p); refused != 2 {
			return fmt.Errorf("the process logged %d refusals, want 2", refused)
		}
		return nil
	})
	if code, h := getHealthz(t, metrics); code != 200 || h.Generation != 2 {
		t.Errorf("/healthz after the refusals: %d %+v, want generation 2", code, h)
	}
	expectProxied(t, listen, "new.e2e.test", news)
	_, page := httpGet(t, "http://"+metrics+"/metrics")
	if v, _ := metricValue(page, "edgegate_config_reload_total", `result="error"`); v != 2 {
		t.Errorf("edgegate_config_reload_total{result=\"error\"} = %v, want 2 (both refusals counted by the process)", v)
	}

	// What a reload applies that it used to refuse: a new metrics address
	// and the log format; what needs a restart is named in the answer.
	moved := freeAddr(t)
	applied := strings.Replace(added, fmt.Sprintf("metrics: {listen: %q}", metrics), fmt.Sprintf("metrics: {listen: %q}", moved), 1)
	applied = strings.Replace(applied, "format: json", "format: text", 1)
	applied = strings.Replace(applied, first, first+"    reuse_port: true\n", 1)
	writeFile(t, dir, "edgegate.yaml", applied)
	stdout, stderr, code = runEdgegate(t, "reload", "--config", cfg)
	if want := fmt.Sprintf("reload: ok; listen %s reuse_port\n", listen); code != 0 || stdout != want || stderr != "" {
		t.Fatalf("edgegate reload moving metrics: exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
	if code, h := getHealthz(t, moved); code != 200 || h.Generation != 3 {
		t.Fatalf("/healthz on the new metrics address: %d %+v, want generation 3", code, h)
	}
	if _, err := net.DialTimeout("tcp", metrics, time.Second); err == nil {
		t.Error("the old metrics address still answers after it moved")
	}
	metrics = moved
	p.stderr.waitFor(t, "a text log line after the reload", func(l string) bool {
		return strings.Contains(l, `level=WARN msg="setting changed but needs a restart`)
	})

	// The socket answers nothing but its two requests.
	c, err := net.DialTimeout("unix", filepath.Join(dir, "control.sock"), waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(waitLimit))
	fmt.Fprintln(c, "shutdown")
	if answer, err := bufio.NewReader(c).ReadString('\n'); err != nil || answer != "error: unknown request \"shutdown\"\n" {
		t.Errorf("unknown request: answer %q, %v", answer, err)
	}
	c.Close()
	if !p.running() {
		t.Fatal("edgegate exited")
	}

	p.signal(t, stopSignals[0].sig)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
	for _, f := range []string{"control.sock", "edgegate.pid"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s after the process stopped: %v, want it removed", f, err)
		}
	}
	writeFile(t, dir, "edgegate.yaml", added)
	stdout, stderr, code = runEdgegate(t, "reload", "--config", cfg)
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "edgegate reload: ") {
		t.Errorf("edgegate reload with no process: exit %d, stdout %q, stderr %q; want 1 and a reason", code, stdout, stderr)
	}
}

// TestReloadByPIDFile: without a control socket, `edgegate reload` sends
// SIGHUP to the process the pid file names (and says so), and the reload
// happens; a file that does not load is refused before any signal.
func TestReloadByPIDFile(t *testing.T) {
	t.Parallel()
	www := newTLSUpstream(t, "www.e2e.test")
	news := newTLSUpstream(t, "new.e2e.test")
	listen, metrics := freeAddr(t), freeAddr(t)
	base := withKeys("pid_file: edgegate.pid\n", gatewayConfig(listen, metrics, www.ln.Addr().String(), "info", "json", "30s"))
	p, cfg := startGateway(t, base, true)
	dir := filepath.Dir(cfg)

	broken, line := brokenConfig(base)
	writeFile(t, dir, "edgegate.yaml", broken)
	_, stderr, code := runEdgegate(t, "reload", "--config", cfg)
	if want := fmt.Sprintf("%s:%d: ", cfg, line); code != 1 || !strings.HasPrefix(stderr, want) {
		t.Fatalf("edgegate reload with a broken file: exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}

	writeFile(t, dir, "edgegate.yaml", base+newVHost(news))
	stdout, stderr, code := runEdgegate(t, "reload", "--config", cfg)
	want := fmt.Sprintf("reload: sent hangup to %d (no control_socket: the result is in its log)\n", p.cmd.Process.Pid)
	if code != 0 || stdout != want {
		t.Fatalf("edgegate reload by pid file: exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
	p.stderr.waitJSON(t, "the reload to generation 2", func(r map[string]any) bool {
		return r["msg"] == "configuration reloaded" && r["generation"] == 2.0
	})
	expectProxied(t, listen, "new.e2e.test", news)
	if ok, refused := reloadRecords(t, p); ok != 1 || refused != 0 {
		t.Errorf("the process logged %d reloads and %d refusals; want 1 and none", ok, refused)
	}
	p.signal(t, stopSignals[0].sig)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
}

// TestReloadNowhere: a configuration that names neither a control socket
// nor a pid file gives `edgegate reload` and `edgegate upgrade` no way to
// reach the process: exit 1 and say so.
func TestReloadNowhere(t *testing.T) {
	t.Parallel()
	cfg := writeFile(t, t.TempDir(), "edgegate.yaml", gatewayConfig(freeAddr(t), "", "127.0.0.1:9", "info", "text", "30s"))
	for _, op := range []string{"reload", "upgrade"} {
		stdout, stderr, code := runEdgegate(t, op, "--config", cfg)
		want := "edgegate " + op + ": the configuration names neither control_socket nor pid_file\n"
		if code != 1 || stdout != "" || stderr != want {
			t.Errorf("edgegate %s: exit %d, stdout %q, stderr %q; want 1 and %q", op, code, stdout, stderr, want)
		}
	}
}
