package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/testpki"
)

// testsslSections are the parts of testssl.sh's report that judge the TLS
// configuration itself: which protocols and cipher suites are offered, and
// the known attacks on them.
var testsslSections = []string{"protocols", "ciphers", "vulnerabilities"}

// testsslNoClientCert is the finding testssl.sh gives for a check it skips
// once it notices the server asks for a client certificate. Whether it
// notices depends on how its first handshakes end, so a run may or may not
// skip them.
const testsslNoClientCert = "client x509-based authentication prevents this from being tested"

// testsslSkippable are the checks testssl.sh may skip on an mtls vhost, and
// why that loses nothing.
var testsslSkippable = map[string]string{
	"BREACH":               "HTTP compression is the upstream's business; edgegate does not speak HTTP",
	"secure_client_renego": "TestNoClientRenegotiation checks it with a client certificate",
}

// testsslRequired are findings a complete scan has; each was wrong before
// the intermediate profile became the default, or proves a section ran.
var testsslRequired = []string{"TLS1", "TLS1_2", "TLS1_3", "cipherlist_AVERAGE", "cipherlist_3DES_IDEA", "LUCKY13", "SWEET32", "ROBOT"}

// testsslFinding is one result in testssl.sh's JSON report.
type testsslFinding struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Finding  string `json:"finding"`
}

// TestTestsslDefaultProfile scans an mtls vhost with its default TLS
// settings using testssl.sh, as an auditor would, and requires every
// protocol, cipher and vulnerability finding to be OK or INFO. testssl.sh
// has no client certificate: it sees each handshake up to the server's
// flight (ServerHello, certificate, CertificateRequest), which is where
// protocols, suites and key exchange are chosen and where the attacks it
// probes live, and the gateway then closes without a response. The two
// checks that need a finished handshake it may skip (testsslSkippable).
// None of its connections may reach the upstream.
func TestTestsslDefaultProfile(t *testing.T) {
	bin := findTestssl(t)
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	// unmatched: app sends the probes testssl.sh makes without SNI to the
	// mtls vhost too, so every ClientHello meets crypto/tls.
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
unmatched: app
vhosts:
  - name: app
    hosts: [app.example.test]
    mode: mtls
    tls:
      certificates: [{cert: %q, key: %q}]
    client_auth: {ca: %q}
    upstream: {address: %q}
`, p.certFile, p.keyFile, p.caFile, up.address()))
	_, port, _ := strings.Cut(s.addr(t, "127.0.0.1:0"), ":")

	dir := t.TempDir()
	report := filepath.Join(dir, "testssl.json")
	args := []string{
		"--quiet", "--color", "0", "--warnings", "off",
		"--ip", "127.0.0.1", "--nodns", "none",
		"--protocols", "--std", "--vulnerable",
		"--jsonfile-pretty", report,
		"app.example.test:" + port,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	// testssl.sh runs openssl and its own children; end them all at the
	// deadline, not just the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("%s %s: %v in %v", bin, strings.Join(args, " "), err, time.Since(start).Round(time.Second))
	if ctx.Err() != nil {
		t.Fatalf("testssl.sh did not finish in time:\n%s", out)
	}
	// testssl.sh's exit status counts findings, so the report decides.
	sections, rerr := readTestsslReport(report)
	if rerr != nil {
		t.Fatalf("%v (exit %v)\n%s", rerr, err, out)
	}

	var bad []string
	seen := map[string]bool{}
	for name, fs := range sections {
		for _, f := range fs {
			if f.Severity == "FATAL" || f.ID == "scanProblem" {
				t.Errorf("testssl.sh could not scan: %s/%s %s: %s\n%s", name, f.ID, f.Severity, f.Finding, out)
			}
		}
	}
	for _, name := range testsslSections {
		for _, f := range sections[name] {
			seen[f.ID] = true
			switch {
			case f.Severity == "OK" || f.Severity == "INFO":
			case f.Severity == "WARN" && f.Finding == testsslNoClientCert && testsslSkippable[f.ID] != "":
				t.Logf("testssl.sh skipped %s (no client certificate): %s", f.ID, testsslSkippable[f.ID])
			default:
				bad = append(bad, fmt.Sprintf("%s/%s %s: %s", name, f.ID, f.Severity, f.Finding))
			}
		}
	}
	if len(bad) > 0 {
		t.Errorf("findings worse than OK or INFO:\n  %s", strings.Join(bad, "\n  "))
	}
	for _, id := range testsslRequired {
		if !seen[id] {
			t.Errorf("testssl.sh reported no %s; the scan is incomplete\n%s", id, out)
		}
	}
	if got := s.count("127.0.0.1:0", "app", OutcomeClientCert); got == 0 {
		t.Errorf("no connection was refused for lacking a client certificate; did the scan reach the mtls vhost?")
	}
	up.expectNone(t)
}

// findTestssl returns Debian's testssl (package testssl.sh) or an upstream
// testssl.sh checkout on PATH; when neither is there the test is skipped,
// except in CI, which must install it.
func findTestssl(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"testssl", "testssl.sh"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := "testssl.sh not found (Debian package testssl.sh): CI must install it; elsewhere the scan is skipped"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// readTestsslReport reads a --jsonfile-pretty report: the findings of the
// one host scanned, by section.
func readTestsslReport(path string) (map[string][]testsslFinding, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("testssl.sh wrote no report: %w", err)
	}
	var r struct {
		ScanResult []map[string]json.RawMessage `json:"scanResult"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("testssl.sh report %s: %w", path, err)
	}
	if len(r.ScanResult) != 1 {
		return nil, fmt.Errorf("testssl.sh report %s: %d scan results, want 1", path, len(r.ScanResult))
	}
	sections := map[string][]testsslFinding{}
	for name, raw := range r.ScanResult[0] {
		var fs []testsslFinding
		if json.Unmarshal(raw, &fs) == nil {
			sections[name] = fs
		}
	}
	return sections, nil
}

// TestNoClientRenegotiation has openssl s_client, with a valid client
// certificate, ask for a renegotiation after a TLS 1.2 handshake: the
// gateway must refuse it (crypto/tls servers never renegotiate), so the
// client sees no second ServerHello. testssl.sh cannot judge this on an
// mtls vhost, having no certificate to finish a handshake with.
func TestNoClientRenegotiation(t *testing.T) {
	bin := needBinary(t, "openssl")
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, nil)
	s := startServer(t, mtlsConfig(p, "127.0.0.1:0", up.address(), ""))
	certFile, keyFile, err := testpki.WritePEM(t.TempDir(), "client", p.clients["valid"])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "s_client", "-connect", s.addr(t, "127.0.0.1:0"), "-servername", "app.example.test",
		"-tls1_2", "-cert", certFile, "-key", keyFile, "-CAfile", p.caFile, "-msg")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// "R" asks s_client to renegotiate; stdin stays open so that it waits
	// for the gateway's answer instead of quitting.
	in.Write([]byte("R\n"))
	err = cmd.Wait()
	in.Close()
	if ctx.Err() != nil {
		t.Fatalf("openssl s_client still connected after asking to renegotiate:\n%s", out.String())
	}
	first, renego, ok := strings.Cut(out.String(), "\nRENEGOTIATING\n")
	switch {
	case !ok || !strings.Contains(first, "Verify return code: 0 (ok)"):
		t.Fatalf("openssl s_client did not complete a handshake and ask to renegotiate (exit %v):\n%s", err, out.String())
	case len(serverHello.FindAllString(first, -1)) != 1:
		t.Fatalf("the first handshake's ServerHello is not where the test looks for one:\n%s", first)
	case serverHello.MatchString(renego):
		t.Fatalf("the gateway renegotiated:\n%s", renego)
	}
	up.next(t)
}

// serverHello matches a ServerHello from the server in s_client's -msg trace.
var serverHello = regexp.MustCompile(`(?m)^<<< TLS [0-9.]+, Handshake \[length [0-9a-f]+\], ServerHello$`)
