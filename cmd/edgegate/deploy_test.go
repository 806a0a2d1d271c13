package main_test

import (
	"bufio"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/clientauth"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/testpki"
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
	cfg, err := config.Load(deployConfig, nil)
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
			t.Errorf("mtls vhost %q has no pin placeholder", v.Name)
		}
		// A well-formed pin in the example would look real: an operator
		// could keep it without computing their own. Only a placeholder
		// that edgegate check refuses belongs there.
		for _, p := range v.ClientAuth.SPKISHA256 {
			if _, err := clientauth.ParsePin(p); err == nil {
				t.Errorf("mtls vhost %q: pin %q is well-formed; want a placeholder that edgegate check refuses", v.Name, p)
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

// TestDeployExampleChecks runs `edgegate check` on the example as an
// operator would after step 3 of docs/operations.md, with every file it
// names in place: it is refused for its pin placeholder, at that line; with
// the placeholder replaced by the pin that the example's openssl command
// prints, it passes without warnings.
func TestDeployExampleChecks(t *testing.T) {
	example, err := os.ReadFile(deployConfig)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := writeFile(t, dir, "edgegate.yaml", string(example))
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testpki.NewCA("deploy test CA")
	if err != nil {
		t.Fatal(err)
	}
	var placeholders []string
	for _, v := range cfg.VHosts {
		if v.Mode != "mtls" {
			continue
		}
		for _, c := range v.TLS.Certificates {
			name, ok := strings.CutSuffix(c.Cert, ".crt")
			if !ok || c.Key != name+".key" {
				t.Fatalf("vhost %q: certificate %s, key %s; want NAME.crt and NAME.key", v.Name, c.Cert, c.Key)
			}
			var leaf tls.Certificate
			if strings.Contains(name, "rsa") {
				leaf, err = ca.ServerRSA(v.Hosts...)
			} else {
				leaf, err = ca.Server(v.Hosts...)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(cfg.Path(c.Cert)), 0o755); err != nil {
				t.Fatal(err)
			}
			if _, _, err := testpki.WritePEM(filepath.Dir(cfg.Path(c.Cert)), filepath.Base(name), leaf); err != nil {
				t.Fatal(err)
			}
		}
		if f := v.TLS.SessionTicketKeys; f != "" {
			// As docs/operations.md makes them: readable by edgegate only.
			if err := os.Chmod(writeFile(t, dir, f, string(make([]byte, 32))), 0o640); err != nil {
				t.Fatal(err)
			}
		}
		if v.ClientAuth.CA != "cloudflare" {
			t.Fatalf("vhost %q: client_auth.ca %q; this test provides only the built-in Cloudflare CA", v.Name, v.ClientAuth.CA)
		}
		for _, p := range v.ClientAuth.SPKISHA256 {
			if _, err := clientauth.ParsePin(p); err != nil {
				placeholders = append(placeholders, p)
			}
		}
	}
	if len(placeholders) != 1 {
		t.Fatalf("the example has %d pin placeholders, want 1: %q", len(placeholders), placeholders)
	}
	placeholder := `"` + placeholders[0] + `"`
	line := 0
	for i, l := range strings.Split(string(example), "\n") {
		if strings.Contains(l, placeholder) {
			line = i + 1
		}
	}

	_, stderr, code := runEdgegate(t, "check", "--config", path)
	if want := fmt.Sprintf("%s:%d:", path, line); code != 1 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "spki_sha256") {
		t.Errorf("edgegate check on the example as shipped: exit %d, stderr %q; want exit 1 and an spki_sha256 error at %s", code, stderr, want)
	}

	// The pin of a zone AOP certificate, as the example says to compute it.
	zone, err := ca.Client("zone AOP certificate")
	if err != nil {
		t.Fatal(err)
	}
	pin := hex.EncodeToString(testpki.SPKISHA256(zone.Leaf))
	if openssl, err := exec.LookPath("openssl"); err == nil {
		writeFile(t, dir, "zone-aop.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: zone.Certificate[0]})))
		var command string
		for _, l := range strings.Split(string(example), "\n") {
			if c, ok := strings.CutPrefix(strings.TrimLeft(l, " #"), "openssl x509 -in zone-aop.crt"); ok {
				command = "openssl x509 -in zone-aop.crt" + c
			}
		}
		if command == "" {
			t.Fatal("the example shows no openssl command for the pin")
		}
		cmd := exec.Command("sh", "-c", command)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(openssl)+":"+os.Getenv("PATH"))
		out, err := cmd.Output()
		if f := strings.Fields(string(out)); err != nil || len(f) == 0 || f[0] != pin {
			t.Errorf("%s: %v, output %q; want the pin %s as the first field", command, err, out, pin)
		}
	}
	writeFile(t, dir, "edgegate.yaml", strings.Replace(string(example), placeholder, `"`+pin+`"`, 1))
	stdout, stderr, code := runEdgegate(t, "check", "--config", path)
	if code != 0 {
		t.Fatalf("edgegate check on the example with a pin: exit %d\n%s", code, stderr)
	}
	if ws := warningLines(stdout); len(ws) > 0 {
		t.Errorf("edgegate check on the example warns:\n%s", strings.Join(ws, "\n"))
	}
}

// TestDeployExampleGuardComments: the example enables the eBPF guard on a
// named interface with required: false. Its comments must say that the name
// is to be changed, and that a guard that cannot attach leaves edgegate
// running unguarded and how that shows.
func TestDeployExampleGuardComments(t *testing.T) {
	cfg, err := config.Load(deployConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.EBPF.Enabled {
		t.Skip("the example does not enable the eBPF guard")
	}
	text, err := os.ReadFile(deployConfig)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(text), "\n")
	// The ebpf section: the comment above it, and its lines up to the next
	// top-level key.
	start := slices.Index(lines, "ebpf:")
	if start < 0 {
		t.Fatal("no ebpf: section")
	}
	end := start + 1
	for end < len(lines) && (lines[end] == "" || lines[end][0] == ' ' || lines[end][0] == '#') {
		end++
	}
	for start > 0 && strings.HasPrefix(lines[start-1], "#") {
		start--
	}
	var comments []string
	interfaceComment := ""
	for _, l := range lines[start:end] {
		code, comment, _ := strings.Cut(l, "#")
		comments = append(comments, comment)
		if strings.HasPrefix(strings.TrimSpace(code), "interfaces:") {
			interfaceComment = comment
		}
	}
	if !strings.Contains(strings.ToLower(interfaceComment), "change") {
		t.Errorf("ebpf.interfaces %q has no comment saying to change it to the host's interface", cfg.EBPF.Interfaces)
	}
	all := strings.Join(comments, " ")
	if !cfg.EBPF.Required {
		for _, want := range []string{"UNGUARDED", "RUNNING WITHOUT THE EBPF", "edgegate_bpf_guard_up"} {
			if !strings.Contains(all, want) {
				t.Errorf("ebpf.required is false but the example's comments do not say %q", want)
			}
		}
	}
}

// TestDeployInstallTable checks the table at the top of docs/operations.md's
// deployment section, which lists what an installation holds: every file in
// deploy/ is in it, every file the example configuration names is
// installed by it where the configuration looks for it, the unit runs the
// configuration it installs, the unit creates the folders it says the unit
// creates, and the shell steps install what it says they do. Every deploy/
// path the documentation mentions exists.
func TestDeployInstallTable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "\n## Deployment\n")
	section, _, _ = strings.Cut(section, "\n## ")
	quoted := regexp.MustCompile("`([^`]+)`")
	type row struct {
		from string   // a deploy/ file, or ""
		to   []string // absolute; folders end in /
		by   string
	}
	var rows []row
	var shell []string // lines of the section's sh blocks
	inTable, inSh := false, false
	for _, l := range strings.Split(section, "\n") {
		switch {
		case strings.HasPrefix(l, "| from | to |"):
			inTable = true
		case inTable && strings.HasPrefix(l, "| ---"):
		case inTable && strings.HasPrefix(l, "| "):
			cells := strings.Split(strings.Trim(l, "| "), " | ")
			if len(cells) != 4 {
				t.Fatalf("table row %q: want 4 cells", l)
			}
			r := row{by: cells[3]}
			if m := quoted.FindStringSubmatch(cells[0]); m != nil && strings.HasPrefix(m[1], "deploy/") {
				r.from = m[1]
			}
			for _, m := range quoted.FindAllStringSubmatch(cells[1], -1) {
				if strings.HasPrefix(m[1], "/") {
					r.to = append(r.to, m[1])
				}
			}
			rows = append(rows, r)
		case l == "```sh":
			inTable, inSh = false, true
		case l == "```":
			inTable, inSh = false, false
		case inSh:
			shell = append(shell, l)
		default:
			inTable = false
		}
	}
	if len(rows) == 0 {
		t.Fatal("docs/operations.md's deployment section has no table of what is installed (| from | to | ...)")
	}

	installed := map[string]bool{}
	from := map[string][]string{}
	for _, r := range rows {
		for _, p := range r.to {
			installed[p] = true
		}
		if r.from != "" {
			from[r.from] = r.to
		}
	}
	err = filepath.WalkDir("../../deploy", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := strings.TrimPrefix(path, "../../")
		if _, ok := from[name]; !ok {
			t.Errorf("%s is not in docs/operations.md's table of what is installed", name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Every deploy/ path the documentation and the deploy files mention
	// exists.
	mentions := []string{"../../README.md", deployConfig, deployUnit, deployUsers}
	docs, _ := filepath.Glob("../../docs/*.md")
	for _, f := range append(mentions, docs...) {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range regexp.MustCompile(`\bdeploy/[A-Za-z0-9._/-]*[A-Za-z0-9]`).FindAllString(string(text), -1) {
			if _, err := os.Stat("../../" + p); err != nil {
				t.Errorf("%s names %s, which does not exist", f, p)
			}
		}
	}

	// The unit runs the configuration the table installs, and every file
	// the example names is installed where it resolves from there.
	dests := from["deploy/edgegate.yaml"]
	if len(dests) != 1 {
		t.Fatalf("the table installs deploy/edgegate.yaml to %q; want one path", dests)
	}
	unit := readUnit(t)
	if exec := unit.get(t, "ExecStart"); !strings.HasSuffix(exec, " --config "+dests[0]) {
		t.Errorf("ExecStart=%s does not run the configuration the table installs, %s", exec, dests[0])
	}
	cfg, err := config.Load(deployConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	resolve := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(dests[0]), p)
	}
	var files []string
	for _, v := range cfg.VHosts {
		if v.Mode != "mtls" {
			continue
		}
		for _, c := range v.TLS.Certificates {
			files = append(files, resolve(c.Cert), resolve(c.Key))
		}
		if f := v.TLS.SessionTicketKeys; f != "" {
			files = append(files, resolve(f))
		}
		if v.ClientAuth.CA != "cloudflare" {
			files = append(files, resolve(v.ClientAuth.CA))
		}
	}
	for _, f := range files {
		if !installed[f] {
			t.Errorf("the example names %s, which the table does not install", f)
		}
	}
	for _, f := range []string{cfg.PIDFile, cfg.ControlSocket, cfg.CloudflareData} {
		if !installed[filepath.Dir(f)+"/"] {
			t.Errorf("the example names %s, in a folder the table does not list", f)
		}
	}

	// What the table says the unit creates, the unit creates; what it says
	// a step installs, that step's shell lines install.
	fields := func(l string) []string {
		return strings.FieldsFunc(l, func(r rune) bool { return r == ' ' || strings.ContainsRune("()&;<>|", r) })
	}
	for _, r := range rows {
		for _, p := range r.to {
			switch {
			case strings.Contains(r.by, "RuntimeDirectory="):
				if got := "/run/" + unit.get(t, "RuntimeDirectory") + "/"; got != p {
					t.Errorf("the table has RuntimeDirectory= create %s; the unit's is %s", p, got)
				}
			case strings.Contains(r.by, "StateDirectory="):
				if got := "/var/lib/" + unit.get(t, "StateDirectory") + "/"; got != p {
					t.Errorf("the table has StateDirectory= create %s; the unit's is %s", p, got)
				}
			case strings.Contains(r.by, "LogsDirectory="):
				if got := "/var/log/" + unit.get(t, "LogsDirectory") + "/"; got != p {
					t.Errorf("the table has LogsDirectory= create %s; the unit's is %s", p, got)
				}
			case strings.Contains(r.by, "ExecStartPre="):
				found := false
				for _, pre := range unit["ExecStartPre"] {
					found = found || slices.Contains(fields(pre), strings.TrimSuffix(p, "/"))
				}
				if !found {
					t.Errorf("the table has ExecStartPre= create %s; the unit's are %q", p, unit["ExecStartPre"])
				}
			case strings.HasPrefix(r.by, "step "):
				found := false
				for _, l := range shell {
					f := fields(l)
					if slices.Contains(f, strings.TrimSuffix(p, "/")) ||
						slices.Contains(f, filepath.Base(p)) && slices.Contains(f, filepath.Dir(p)+"/") {
						found = true
					}
				}
				if !found {
					t.Errorf("the table has %s install %s, but no shell line of the deployment steps does", r.by, p)
				}
			default:
				t.Errorf("the table installs %s by %q, which this test does not know", p, r.by)
			}
		}
	}
}

// unitFile is a systemd unit as key -> values, in order.
type unitFile map[string][]string

func readUnit(t *testing.T) unitFile {
	t.Helper()
	return readUnitFile(t, deployUnit)
}

// readUnitFile reads the unit file at path.
func readUnitFile(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
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
			t.Fatalf("%s: line %q is not key=value", path, line)
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
		t.Fatalf("unit: %s is set %d times, want once", key, len(u[key]))
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
	// The configuration is checked before each start, so a broken file
	// fails the start with FILE:LINE instead of a crash loop.
	if !slices.Contains(u["ExecStartPre"], "/usr/local/bin/edgegate check --config /etc/edgegate/edgegate.yaml") {
		t.Errorf("ExecStartPre %q does not run edgegate check on the configuration ExecStart runs", u["ExecStartPre"])
	}
	rw := strings.Fields(u.get(t, "ReadWritePaths"))
	for _, want := range []string{"-/sys/fs/bpf/edgegate", "/run/edgegate", "/var/lib/edgegate", "/var/log/" + u.get(t, "LogsDirectory")} {
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

	verifyUnits(t, deployUnit)
}

// verifyUnits has systemd-analyze verify the unit files (those of one
// service and its timer together), with their edgegate binary pointed at
// the one built for these tests, since verify insists that it exists.
func verifyUnits(t *testing.T, units ...string) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		// Not a prerequisite of the test suite, so this skips even in CI.
		t.Skip("systemd-analyze not installed (Debian package systemd), not a test prerequisite: unit not verified by systemd")
	}
	dir := t.TempDir()
	var copies []string
	for _, u := range units {
		text, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		c := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(c, []byte(strings.ReplaceAll(string(text), "/usr/local/bin/edgegate", edgegateBin)), 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, c)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, copies...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify exits 0 for keys it does not know and values it cannot parse
	// ("Unknown key ..., ignoring"); any complaint about these units counts.
	for _, line := range strings.Split(string(out), "\n") {
		for _, u := range units {
			if strings.Contains(line, filepath.Base(u)) {
				t.Errorf("systemd-analyze verify: %s", line)
				break
			}
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
