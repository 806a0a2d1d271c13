package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCloudflareUpdateReloadsOnChange runs `edgegate cloudflare update
// --reload CONFIG` as the daily timer does, against a running gateway: a set
// that differs from the installed one is installed and the gateway reloads
// (its generation moves); the same set again writes nothing and reloads
// nothing; a changed list reloads again.
func TestCloudflareUpdateReloadsOnChange(t *testing.T) {
	t.Parallel()
	up := newTLSUpstream(t, "www.e2e.test")
	listen, metrics := freeAddr(t), freeAddr(t)
	base := gatewayConfig(listen, metrics, up.ln.Addr().String(), "info", "json", "30s")
	_, cfg := startGateway(t, "control_socket: control.sock\ncloudflare_data: cloudflare\n"+base, true)
	dir := filepath.Dir(cfg)
	data := filepath.Join(dir, "cloudflare")

	in := t.TempDir()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("../../gateway/cloudflare", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	v4, v6, ca := read("ips-v4.txt"), read("ips-v6.txt"), read("origin-pull-ca.pem")
	update := func(v4 string) (string, string, int) {
		writeFile(t, in, "ips-v4", v4)
		writeFile(t, in, "ips-v6", v6)
		writeFile(t, in, "ca.pem", ca)
		return runEdgegate(t, "cloudflare", "update", "--ips-v4", filepath.Join(in, "ips-v4"), "--ips-v6", filepath.Join(in, "ips-v6"),
			"--ca", filepath.Join(in, "ca.pem"), "--dir", data, "--reload", cfg)
	}
	generation := func() int {
		t.Helper()
		_, h := getHealthz(t, metrics)
		return h.Generation
	}

	stdout, stderr, code := update(v4)
	if code != 0 || !strings.Contains(stdout, "installed in "+data) || !strings.HasSuffix(stdout, "reload: ok\n") {
		t.Fatalf("first update: exit %d, stdout %q, stderr %q; want it installed and the gateway reloaded", code, stdout, stderr)
	}
	if g := generation(); g != 2 {
		t.Fatalf("generation %d after the first update, want 2", g)
	}
	installed, err := os.Stat(filepath.Join(data, "ips-v4.txt"))
	if err != nil {
		t.Fatal(err)
	}

	stdout, stderr, code = update(v4)
	if code != 0 || !strings.HasPrefix(stdout, "unchanged: ") || strings.Contains(stdout, "reload") && !strings.Contains(stdout, "nothing reloaded") {
		t.Fatalf("same set again: exit %d, stdout %q, stderr %q; want 0 and unchanged", code, stdout, stderr)
	}
	if g := generation(); g != 2 {
		t.Errorf("generation %d after an unchanged set, want 2 still: nothing should have reloaded", g)
	}
	if again, err := os.Stat(filepath.Join(data, "ips-v4.txt")); err != nil || !again.ModTime().Equal(installed.ModTime()) || !os.SameFile(installed, again) {
		t.Errorf("an unchanged set was written again")
	}

	// Cloudflare drops a range.
	lines := strings.Split(strings.TrimSpace(v4), "\n")
	stdout, stderr, code = update(strings.Join(lines[1:], "\n") + "\n")
	if code != 0 || !strings.HasSuffix(stdout, "reload: ok\n") {
		t.Fatalf("changed set: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if g := generation(); g != 3 {
		t.Errorf("generation %d after a changed set, want 3", g)
	}
}
