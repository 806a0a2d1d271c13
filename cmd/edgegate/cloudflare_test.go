package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/cloudflare"
)

// The reference data as Cloudflare publishes it, embedded in the gateway.
const refData = "../../gateway/cloudflare/"

func readRef(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(refData + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cfList returns n distinct prefixes of one family, one a line.
func cfList(n int, ipv6 bool) string {
	var b strings.Builder
	for i := range n {
		if ipv6 {
			fmt.Fprintf(&b, "2001:db8:%x::/48\n", i)
		} else {
			fmt.Fprintf(&b, "198.18.%d.0/24\n", i)
		}
	}
	return b.String()
}

// cfCA returns a self-signed certificate in PEM.
func cfCA(t *testing.T, cn string, notBefore, notAfter time.Time, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// cfInputs writes the three input files into a fresh folder and returns
// the flags naming them.
func cfInputs(t *testing.T, v4, v6, ca string) []string {
	t.Helper()
	in := t.TempDir()
	var args []string
	for _, f := range []struct{ flag, name, data string }{
		{"--ips-v4", "v4.txt", v4}, {"--ips-v6", "v6.txt", v6}, {"--ca", "ca.pem", ca},
	} {
		p := filepath.Join(in, f.name)
		if err := os.WriteFile(p, []byte(f.data), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, f.flag, p)
	}
	return args
}

// runCloudflare runs `edgegate cloudflare ARGS`.
func runCloudflare(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = cmdCloudflare(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func updateArgs(dir string, inputs []string) []string {
	return append([]string{"update", "--dir", dir}, inputs...)
}

// snapshotDir returns every file in dir with its contents.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return files
}

func TestCloudflareUpdateInstalls(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "edgegate", "cloudflare")
	v4, v6, ca := readRef(t, "ips-v4.txt"), readRef(t, "ips-v6.txt"), readRef(t, "origin-pull-ca.pem")
	// As fetched on a bad day: CRLF line ends, a comment, no final newline.
	messyV4 := "# fetched from https://www.cloudflare.com/ips-v4\r\n" +
		strings.TrimSuffix(strings.ReplaceAll(string(v4), "\n", "\r\n"), "\r\n")
	stdout, stderr, code := runCloudflare(updateArgs(dir, cfInputs(t, messyV4, string(v6), string(ca)))...)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr %q; want nothing for Cloudflare's own data", stderr)
	}
	if !strings.Contains(stdout, "15 IPv4 and 7 IPv6 ranges") || !strings.Contains(stdout, "valid until 2029-11-01") ||
		!strings.Contains(stdout, "edgegate reload") {
		t.Errorf("stdout %q does not report the installed set and how to use it", stdout)
	}
	got := snapshotDir(t, dir)
	want := map[string]string{"ips-v4.txt": string(v4), "ips-v6.txt": string(v6), "origin-pull-ca.pem": string(ca)}
	if len(got) != len(want) {
		t.Errorf("folder holds %v; want exactly the three files (no temporary files left)", slices.Sorted(mapKeys(got)))
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %q; want the canonical form %q", name, got[name], w)
		}
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v, mode %v; want 0644 so the edgegate user can read it", name, err, st.Mode())
		}
	}
	// What the gateway reads is what was installed.
	d, err := cloudflare.Read(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d.Source != dir || len(d.IPv4) != 15 || len(d.IPv6) != 7 || !d.CA.Equal(cloudflare.Builtin().CA) {
		t.Errorf("the gateway reads %d IPv4, %d IPv6, CA %v from %q", len(d.IPv4), len(d.IPv6), d.CA.Subject, d.Source)
	}

	// Installing again over a good set works the same way.
	if _, stderr, code := runCloudflare(updateArgs(dir, cfInputs(t, string(v4), string(v6), string(ca)))...); code != 0 {
		t.Fatalf("second update: exit %d; stderr:\n%s", code, stderr)
	}
	if again := snapshotDir(t, dir); len(again) != 3 || again["ips-v4.txt"] != string(v4) {
		t.Errorf("second update left %v", slices.Sorted(mapKeys(again)))
	}
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestCloudflareUpdateRefuses(t *testing.T) {
	now := time.Now()
	goodCA := cfCA(t, cloudflare.CACommonName, now.Add(-time.Hour), now.Add(365*24*time.Hour), true)
	dir := t.TempDir()
	// The installed set is larger than Cloudflare's, so that a list that
	// passes the absolute minimum can still be less than half of it.
	if _, stderr, code := runCloudflare(updateArgs(dir, cfInputs(t, cfList(30, false), cfList(12, true), goodCA))...); code != 0 {
		t.Fatalf("installing the first set: exit %d; stderr:\n%s", code, stderr)
	}
	before := snapshotDir(t, dir)
	v4, v6 := cfList(20, false), cfList(8, true)

	tests := []struct {
		name   string
		inputs []string
		want   []string // on stderr
	}{
		{"empty v4", cfInputs(t, "", v6, goodCA), []string{"ips-v4.txt", "empty"}},
		{"empty v6", cfInputs(t, v4, "", goodCA), []string{"ips-v6.txt", "empty"}},
		{"html instead of a list", cfInputs(t, "<!DOCTYPE html><html><body>Moved</body></html>\n", v6, goodCA), []string{"ips-v4.txt", "not a CIDR"}},
		{"two lists glued", cfInputs(t, strings.TrimSuffix(v4, "\n")+v6, v6, goodCA), []string{"ips-v4.txt", "line 20"}},
		{"host bits", cfInputs(t, v4+"198.19.0.1/24\n", v6, goodCA), []string{"ips-v4.txt", "host bits"}},
		{"v4 too short", cfInputs(t, cfList(9, false), v6, goodCA), []string{"ips-v4.txt", "9 entries", "at least 10"}},
		{"v6 too short", cfInputs(t, v4, cfList(4, true), goodCA), []string{"ips-v6.txt", "4 entries", "at least 5"}},
		{"v4 under half the installed", cfInputs(t, cfList(14, false), v6, goodCA), []string{"IPv4 list has 14 entries", "half of the 30 in the installed set"}},
		{"v6 under half the installed", cfInputs(t, v4, cfList(5, true), goodCA), []string{"IPv6 list has 5 entries", "half of the 12 in the installed set"}},
		{"files swapped", cfInputs(t, cfList(12, true), cfList(12, false), goodCA), []string{"ips-v4.txt", "not an IPv4 prefix"}},
		{"everyone is cloudflare", cfInputs(t, v4+"0.0.0.0/0\n", v6, goodCA), []string{"0.0.0.0/0", "broader than /8"}},
		{"CA empty", cfInputs(t, v4, v6, ""), []string{"origin-pull-ca.pem", "empty"}},
		{"CA not PEM", cfInputs(t, v4, v6, "<html>Moved</html>\n"), []string{"origin-pull-ca.pem", "not a PEM certificate"}},
		{"CA is a leaf", cfInputs(t, v4, v6, cfCA(t, cloudflare.CACommonName, now.Add(-time.Hour), now.Add(time.Hour), false)), []string{"not a CA certificate"}},
		{"CA expired", cfInputs(t, v4, v6, cfCA(t, cloudflare.CACommonName, now.Add(-48*time.Hour), now.Add(-time.Hour), true)), []string{"origin-pull-ca.pem", "expired"}},
		{"CA not yet valid", cfInputs(t, v4, v6, cfCA(t, cloudflare.CACommonName, now.Add(time.Hour), now.Add(48*time.Hour), true)), []string{"not valid before"}},
		{"CA bundle", cfInputs(t, v4, v6, goodCA+goodCA), []string{"2 certificates"}},
		{"input missing", []string{"--ips-v4", filepath.Join(dir, "nope.txt"), "--ips-v6", "x", "--ca", "y"}, []string{"nope.txt", "no such file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCloudflare(updateArgs(dir, tc.inputs)...)
			if code != 1 {
				t.Errorf("exit %d; want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout %q; want nothing", stdout)
			}
			for _, w := range append(tc.want, "refused", "the set in "+dir+" is unchanged") {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
			if after := snapshotDir(t, dir); !mapsEqual(after, before) {
				t.Errorf("the installed set changed: %v", slices.Sorted(mapKeys(after)))
			}
		})
	}
	// The refusals left the last good set in force for the gateway.
	d, err := cloudflare.Read(dir, now)
	if err != nil || len(d.IPv4) != 30 || len(d.IPv6) != 12 {
		t.Fatalf("after the refusals the gateway reads %v, %v", d, err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestCloudflareUpdateWarnsAboutForeignCA(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	ca := cfCA(t, "Example Corp origin CA", now.Add(-time.Hour), now.Add(time.Hour), true)
	stdout, stderr, code := runCloudflare(updateArgs(dir, cfInputs(t, cfList(15, false), cfList(7, true), ca))...)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "*** WARNING ***") || !strings.Contains(stderr, "Example Corp origin CA") ||
		!strings.Contains(stderr, "CN="+cloudflare.CACommonName) {
		t.Errorf("stderr does not warn loudly about the CA's name:\n%s", stderr)
	}
	if !strings.Contains(stdout, "installed in "+dir) {
		t.Errorf("stdout %q; want the installed set reported", stdout)
	}
}

func TestCloudflareUpdateReplacesBrokenSet(t *testing.T) {
	dir := t.TempDir()
	// Half a set: what a crash between two manual copies leaves behind.
	if err := os.WriteFile(filepath.Join(dir, cloudflare.IPv4File), []byte("198.18.0.0/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := cfInputs(t, string(readRef(t, "ips-v4.txt")), string(readRef(t, "ips-v6.txt")), string(readRef(t, "origin-pull-ca.pem")))
	stdout, stderr, code := runCloudflare(updateArgs(dir, args)...)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "installed set is not valid") || !strings.Contains(stderr, "missing") {
		t.Errorf("stderr does not say the installed set was broken:\n%s", stderr)
	}
	if !strings.Contains(stdout, "(was 15 and 7, built-in)") {
		t.Errorf("stdout %q; want the comparison with the built-in set", stdout)
	}
	if _, err := cloudflare.Read(dir, time.Now()); err != nil {
		t.Errorf("the folder is still broken: %v", err)
	}
}

func TestCloudflareUpdateWriteFails(t *testing.T) {
	base := t.TempDir()
	blocker := filepath.Join(base, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	args := cfInputs(t, string(readRef(t, "ips-v4.txt")), string(readRef(t, "ips-v6.txt")), string(readRef(t, "origin-pull-ca.pem")))
	stdout, stderr, code := runCloudflare(updateArgs(filepath.Join(blocker, "cloudflare"), args)...)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "create "+blocker) {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1 and the folder it could not create", code, stdout, stderr)
	}
}

func TestCloudflareUsage(t *testing.T) {
	dir := t.TempDir()
	full := cfInputs(t, cfList(15, false), cfList(7, true), "")
	for _, tc := range []struct {
		args      []string
		code      int
		complaint string
	}{
		{nil, 2, "usage:"},
		{[]string{"refresh"}, 2, `unknown command "refresh"`},
		{[]string{"update", "--dir", dir}, 2, "--ips-v4 FILE is required"},
		{[]string{"update", "--dir", dir, "--ips-v4", full[1], "--ips-v6", full[3]}, 2, "--ca FILE is required"},
		{append(updateArgs(dir, full), "extra"), 2, `unexpected argument "extra"`},
		{[]string{"update", "--bogus"}, 2, "flag provided but not defined: -bogus"},
	} {
		stdout, stderr, code := runCloudflare(tc.args...)
		if code != tc.code || stdout != "" || !strings.Contains(stderr, tc.complaint) {
			t.Errorf("cloudflare %q: exit %d, stdout %q, stderr %q; want %d and %q", tc.args, code, stdout, stderr, tc.code, tc.complaint)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("cloudflare %q wrote into %s", tc.args, dir)
		}
	}
	stdout, _, code := runCloudflare("help")
	if code != 0 || !strings.Contains(stdout, "edgegate cloudflare update --ips-v4 FILE --ips-v6 FILE --ca FILE [--dir DIR]") {
		t.Errorf("cloudflare help: exit %d, stdout %q", code, stdout)
	}
}
