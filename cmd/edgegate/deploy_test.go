package main_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway"
)

const (
	deployConfig = "../../deploy/edgegate.yaml"
	deployUnit   = "../../deploy/systemd/edgegate.service"
	deployUsers  = "../../deploy/sysusers.d/edgegate.conf"
)

// TestDeployExampleConfig checks that the example configuration an operator
// starts from is valid and shows the setup the operations guide describes.
// Its certificate files do not exist here, so it is loaded, not compiled.
func TestDeployExampleConfig(t *testing.T) {
	cfg, err := gateway.LoadConfig(deployConfig)
	if err != nil {
		t.Fatalf("the example configuration does not load: %v", err)
	}
	if cfg.PIDFile != "/run/edgegate/edgegate.pid" || cfg.ControlSocket != "/run/edgegate/control.sock" {
		t.Errorf("pid_file %q, control_socket %q; want them in the unit's RuntimeDirectory /run/edgegate", cfg.PIDFile, cfg.ControlSocket)
	}
	if cfg.CloudflareData != "/var/lib/edgegate/cloudflare" {
		t.Errorf("cloudflare_data %q; want it in the unit's StateDirectory", cfg.CloudflareData)
	}
	if !strings.HasPrefix(cfg.Metrics.Listen, "127.0.0.1:") {
		t.Errorf("metrics.listen %q; want it on loopback", cfg.Metrics.Listen)
	}
	var modes []string
	for _, v := range cfg.VHosts {
		modes = append(modes, v.Mode)
		if v.Mode != "mtls" {
			continue
		}
		if v.ClientAuth.CA != "cloudflare" || !slices.Contains(v.AllowFrom, "cloudflare") {
			t.Errorf("mtls vhost %q: ca %q, allow_from %q; want Cloudflare's", v.Name, v.ClientAuth.CA, v.AllowFrom)
		}
		if len(v.ClientAuth.SPKISHA256) == 0 {
			t.Errorf("mtls vhost %q has no pins", v.Name)
		}
		for _, p := range v.ClientAuth.SPKISHA256 {
			if _, err := gateway.ParsePin(p); err != nil {
				t.Errorf("mtls vhost %q: %v", v.Name, err)
			}
		}
	}
	slices.Sort(modes)
	if !slices.Equal(modes, []string{"mtls", "passthrough"}) {
		t.Errorf("vhost modes %q; want one mtls and one passthrough", modes)
	}
	// The example must not teach what `edgegate check` warns about (the
	// built-in CA's expiry warning depends on today's date).
	for _, w := range gateway.Warnings(cfg) {
		if !strings.Contains(w, "Cloudflare origin-pull CA expires") {
			t.Errorf("edgegate check would warn: %s", w)
		}
	}

	unit := readUnit(t)
	stop, err := time.ParseDuration(unit.get(t, "TimeoutStopSec"))
	if err != nil {
		t.Fatal(err)
	}
	if stop <= cfg.Timeouts.Drain.D() {
		t.Errorf("TimeoutStopSec %v is not above the example's drain timeout %v: systemd would kill draining connections", stop, cfg.Timeouts.Drain.D())
	}
}

// unitFile is a systemd unit as key -> values, in order.
type unitFile map[string][]string

func readUnit(t *testing.T) unitFile {
	t.Helper()
	f, err := os.Open(deployUnit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not key=value", deployUnit, line)
		}
		u[k] = append(u[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// get returns the one value of key.
func (u unitFile) get(t *testing.T, key string) string {
	t.Helper()
	if len(u[key]) != 1 {
		t.Fatalf("%s: %s is set %d times, want once", deployUnit, key, len(u[key]))
	}
	return u[key][0]
}

// TestDeploySystemdUnit checks the unit's contract with the binary and has
// systemd itself check the rest.
func TestDeploySystemdUnit(t *testing.T) {
	u := readUnit(t)
	for key, want := range map[string]string{
		"Type":         "notify",
		"NotifyAccess": "all", // the process started by an upgrade sends READY=1 and MAINPID=
		"ExecStart":    "/usr/local/bin/edgegate run --config /etc/edgegate/edgegate.yaml",
		"ExecReload":   "/usr/local/bin/edgegate reload --config /etc/edgegate/edgegate.yaml",
		"KillSignal":   "SIGTERM",
		"Restart":      "on-failure",
		"User":         "edgegate",
		"LimitNOFILE":  "1048576",
	} {
		if got := u.get(t, key); got != want {
			t.Errorf("%s=%s; want %s", key, got, want)
		}
	}
	caps := strings.Fields(u.get(t, "AmbientCapabilities"))
	if bound := strings.Fields(u.get(t, "CapabilityBoundingSet")); !slices.Equal(caps, bound) {
		t.Errorf("AmbientCapabilities %q and CapabilityBoundingSet %q differ", caps, bound)
	}
	for _, c := range caps {
		if !slices.Contains([]string{"CAP_NET_BIND_SERVICE", "CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"}, c) {
			t.Errorf("capability %s is more than the gateway needs", c)
		}
	}
	rw := strings.Fields(u.get(t, "ReadWritePaths"))
	for _, want := range []string{"-/sys/fs/bpf/edgegate", "/run/edgegate", "/var/lib/edgegate"} {
		if !slices.Contains(rw, want) {
			t.Errorf("ReadWritePaths %q lacks %s", rw, want)
		}
	}
	// The user the unit runs as is the one the sysusers.d file creates.
	users, err := os.ReadFile(deployUsers)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(users), "\nu edgegate ") {
		t.Errorf("%s does not create the user edgegate", deployUsers)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		// Not a prerequisite of the test suite, so this skips even in CI.
		t.Skip("systemd-analyze not installed (Debian package systemd), not a test prerequisite: unit not verified by systemd")
	}
	// verify insists that ExecStart's binary exists; point it at the one
	// built for these tests and change nothing else.
	text, err := os.ReadFile(deployUnit)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "edgegate.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(text), "/usr/local/bin/edgegate", edgegateBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify exits 0 for keys it does not know and values it cannot parse
	// ("Unknown key ..., ignoring"); any complaint about this unit counts.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, unit) || strings.Contains(line, "edgegate.service") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}

// TestOperationsDocCoversOutcomes keeps the troubleshooting table in
// docs/operations.md in step with the outcomes the gateway can report: a
// new outcome without a row there fails here.
func TestOperationsDocCoversOutcomes(t *testing.T) {
	src, err := os.ReadFile("../../gateway/outcome.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	outcomes := regexp.MustCompile(`Outcome = "([a-z_]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(outcomes) < 10 {
		t.Fatalf("found only %d outcomes in gateway/outcome.go; has its form changed?", len(outcomes))
	}
	for _, m := range outcomes {
		if !strings.Contains(string(doc), "\n| `"+m[1]+"` ") {
			t.Errorf("docs/operations.md has no troubleshooting row for outcome %s", m[1])
		}
	}
}

// TestDocsNameTheClientAuthMode: the README and docs/ name the
// tls.ClientAuthType the gateway really configures for mtls vhosts, and no
// other.
func TestDocsNameTheClientAuthMode(t *testing.T) {
	setting := regexp.MustCompile(`ClientAuth:\s*tls\.(\w+)`)
	used := map[string]bool{}
	err := filepath.WalkDir("../../gateway", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		for _, m := range setting.FindAllStringSubmatch(string(src), -1) {
			used[m[1]] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(used) != 1 {
		t.Fatalf("gateway/ sets ClientAuth to %v; want exactly one mode", used)
	}
	var mode string
	for m := range used {
		mode = m
	}
	docs, _ := filepath.Glob("../../docs/*.md")
	docs = append(docs, "../../README.md")
	named := false
	for _, f := range docs {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`\b(NoClientCert|RequestClientCert|RequireAnyClientCert|VerifyClientCertIfGiven|RequireAndVerifyClientCert)\b`).FindAllString(string(text), -1) {
			if m != mode {
				t.Errorf("%s names %s; the gateway uses tls.%s", f, m, mode)
			}
			named = true
		}
	}
	if !named {
		t.Errorf("neither README.md nor docs/ names the client-auth mode the gateway uses, tls.%s", mode)
	}
}
