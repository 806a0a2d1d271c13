package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeTree writes files (path relative to dir: content) and returns dir.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const includeMain = `listen: [{address: ":443"}]
include: conf.d/*.yaml
vhosts:
  - {name: main, hosts: [main.example], mode: passthrough, upstream: {address: "127.0.0.1:1"}}
`

// TestInclude: the vhosts of every file an include glob matches follow the
// main file's own, file by file in sorted order; the files and the folder
// are among those a watch looks at; paths in included vhosts resolve
// against the main file's folder.
func TestInclude(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"edgegate.yaml": includeMain,
		"conf.d/b.yaml": "vhosts:\n  - {name: b, hosts: [b.example], mode: passthrough, upstream: {address: \"127.0.0.1:2\"}}\n",
		"conf.d/a.yaml": "vhosts:\n  - {name: a1, hosts: [a1.example], mode: passthrough, upstream: {address: \"127.0.0.1:3\"}}\n" +
			"  - {name: a2, hosts: [a2.example], mode: passthrough, upstream: {address: \"127.0.0.1:4\"}, timeouts: {idle: 10s}}\n",
		"conf.d/empty.yaml":    "",
		"conf.d/notes.txt":     "not matched",
		"conf.d/sub.yaml/x":    "a folder the glob matches is skipped",
		"elsewhere/other.yaml": "vhosts: []\n",
	})
	cfg, err := Load(filepath.Join(dir, "edgegate.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range cfg.VHosts {
		names = append(names, v.Name)
	}
	if want := []string{"main", "a1", "a2", "b"}; !slices.Equal(names, want) {
		t.Fatalf("vhosts %v, want %v", names, want)
	}
	wantFiles := []string{filepath.Join(dir, "conf.d/a.yaml"), filepath.Join(dir, "conf.d/b.yaml"), filepath.Join(dir, "conf.d/empty.yaml")}
	if !slices.Equal(cfg.Included, wantFiles) {
		t.Fatalf("included %v, want %v", cfg.Included, wantFiles)
	}
	files := cfg.Files()
	for _, f := range append(wantFiles, filepath.Join(dir, "conf.d")) {
		if !slices.Contains(files, f) {
			t.Errorf("Files() %v lacks %s", files, f)
		}
	}
	if got := cfg.VHosts[2].Timeouts.Idle.D(); got != 10*time.Second {
		t.Errorf("an included vhost's own idle timeout is %v, want 10s", got)
	}
	if got := cfg.VHosts[3].Timeouts.Idle.D(); got != 5*time.Minute {
		t.Errorf("an included vhost without timeouts has idle %v, want the global 5m", got)
	}
}

// TestIncludeErrors: a mistake in an included file is reported at its line
// in that file, whatever finds it: the YAML parser, the strict decoder or
// validation, including validation that looks across files (a name or a
// host used twice).
func TestIncludeErrors(t *testing.T) {
	vhost := func(extra string) string {
		return "vhosts:\n  - name: inc\n    hosts: [inc.example]\n    mode: passthrough\n    upstream: {address: \"127.0.0.1:2\"}\n" + extra
	}
	cases := []struct {
		name, main, included, want string
	}{
		{"syntax", includeMain, "vhosts:\n  - name: inc\n    hosts: [inc.example\n    mode: passthrough\n", "conf.d/x.yaml:3: did not find expected ',' or ']'"},
		{"unknown key", includeMain, vhost("    upstraem: {}\n"), `conf.d/x.yaml:6: unknown key "upstraem"`},
		{"not only vhosts", includeMain, "listen: [{address: \":8443\"}]\n" + vhost(""), `conf.d/x.yaml:1: "listen" in an included file: included files hold only vhosts`},
		{"a list", includeMain, "- name: inc\n", "conf.d/x.yaml:1: an included file holds one key, vhosts:"},
		{"wrong type", includeMain, "vhosts:\n  - name: inc\n    hosts: inc.example\n", "conf.d/x.yaml:3: wrong type"},
		{"validation", includeMain, "vhosts:\n  - name: inc\n    hosts: [inc.example]\n    mode: magic\n    upstream: {address: \"127.0.0.1:2\"}\n", `conf.d/x.yaml:4: vhost "inc": mode "magic"`},
		{"deep validation", includeMain, vhost("    allow_from: [10.0.0.0/8, bogus]\n"), `conf.d/x.yaml:6: vhost "inc": allow_from: "bogus"`},
		{"name used twice", includeMain, strings.Replace(vhost(""), "name: inc", "name: main", 1), `conf.d/x.yaml:2: vhost name "main" is used twice`},
		{"host used twice", includeMain, strings.Replace(vhost(""), "[inc.example]", "[Main.Example]", 1), `conf.d/x.yaml:3: host "Main.Example" is already served by vhost "main"`},
		{"timeout", includeMain, vhost("    timeouts:\n      client_hello: 1s\n"), `conf.d/x.yaml:7: vhost "inc": timeouts.client_hello cannot be set per vhost`},
		{"file missing", strings.Replace(includeMain, "conf.d/*.yaml", "conf.d/missing.yaml", 1), "", `edgegate.yaml:2: include "conf.d/missing.yaml": no such file`},
		{"bad glob", strings.Replace(includeMain, "conf.d/*.yaml", "\"[conf.d/*.yaml\"", 1), "", `edgegate.yaml:2: include "[conf.d/*.yaml": syntax error in pattern`},
		{"wrong include type", strings.Replace(includeMain, "conf.d/*.yaml", "{a: b}", 1), "", "edgegate.yaml:2: want a file name or a list of file names"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTree(t, map[string]string{"edgegate.yaml": tc.main, "conf.d/x.yaml": tc.included})
			_, err := Load(filepath.Join(dir, "edgegate.yaml"), nil)
			if err == nil {
				t.Fatalf("accepted; want %s", tc.want)
			}
			if got := strings.TrimPrefix(err.Error(), dir+"/"); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("error %q\nwant it to start with %q", got, tc.want)
			}
		})
	}
}

// TestVHostTimeouts: a vhost's own timeouts override the global ones key by
// key; what it leaves out it inherits; what cannot apply per vhost is
// refused at its line.
func TestVHostTimeouts(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(`listen: [{address: ":443"}]
timeouts: {upstream_dial: 2s, idle: 1m, handshake: 4s}
vhosts:
  - {name: own, hosts: [a.example], mode: mtls, tls: {certificates: [{cert: a, key: b}]}, upstream: {address: "127.0.0.1:1"},
     timeouts: {idle: 1h, handshake: 20s}}
  - {name: inherits, hosts: [b.example], mode: passthrough, upstream: {address: "127.0.0.1:1"}}
  - {name: dial, hosts: [c.example], mode: passthrough, upstream: {address: "127.0.0.1:1"}, timeouts: {upstream_dial: 50ms}}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := func(s string) Duration {
		v, _ := time.ParseDuration(s)
		return Duration(v)
	}
	want := []Timeouts{
		{ClientHello: d("5s"), UpstreamDial: d("2s"), Idle: d("1h"), Drain: d("30s"), Handshake: d("20s")},
		{ClientHello: d("5s"), UpstreamDial: d("2s"), Idle: d("1m"), Drain: d("30s"), Handshake: d("4s")},
		{ClientHello: d("5s"), UpstreamDial: d("50ms"), Idle: d("1m"), Drain: d("30s"), Handshake: d("4s")},
	}
	for i, w := range want {
		if got := *cfg.VHosts[i].Timeouts; got != w {
			t.Errorf("vhost %s: timeouts %+v, want %+v", cfg.VHosts[i].Name, got, w)
		}
	}

	base := "listen: [{address: \":443\"}]\nvhosts:\n  - name: a\n    hosts: [a.example]\n    mode: passthrough\n    upstream: {address: \"1.2.3.4:5\"}\n    timeouts:\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"client_hello", "      client_hello: 1s\n", `c.yaml:8: vhost "a": timeouts.client_hello cannot be set per vhost: the ClientHello is read before its SNI names a vhost`},
		{"drain", "      idle: 1m\n      drain: 1s\n", `c.yaml:9: vhost "a": timeouts.drain cannot be set per vhost`},
		{"handshake on passthrough", "      handshake: 1s\n", `c.yaml:8: vhost "a": timeouts.handshake is only for mode mtls`},
		{"idle too short", "      idle: 500ms\n", `c.yaml:8: vhost "a": timeouts.idle must be at least 1s (leave it out to inherit the top-level value)`},
		{"zero is not inherit", "      upstream_dial: 0s\n", `c.yaml:8: vhost "a": timeouts.upstream_dial must be at least 10ms`},
		{"unknown", "      idel: 1m\n", `c.yaml:8: unknown key "idel"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(base+tc.yaml), nil)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant %q", err, tc.want)
			}
		})
	}
}

// TestPassthroughAllowFrom: allow_from is accepted on passthrough vhosts and
// parsed as on mtls ones.
func TestPassthroughAllowFrom(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(`listen: [{address: ":443"}]
vhosts: [{name: a, hosts: [a.example], mode: passthrough, upstream: {address: "127.0.0.1:1"}, allow_from: [192.0.2.0/24, "2001:db8::1"]}]
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.VHosts[0].AllowFromPrefixes; len(got) != 2 || got[1].String() != "2001:db8::1/128" {
		t.Fatalf("allow_from parsed as %v", got)
	}
}

// TestCRLKey: client_auth.crl takes one file or a list; each is among the
// files a watch looks at.
func TestCRLKey(t *testing.T) {
	mtls := func(crl string) string {
		return "listen: [{address: \":443\"}]\nvhosts:\n  - name: a\n    hosts: [a.example]\n    mode: mtls\n    upstream: {address: \"1.2.3.4:5\"}\n" +
			"    tls: {certificates: [{cert: a, key: b}]}\n    client_auth:\n      ca: ca.pem\n      crl: " + crl + "\n"
	}
	for crl, want := range map[string][]string{"one.crl": {"one.crl"}, "[one.crl, two.pem]": {"one.crl", "two.pem"}} {
		cfg, err := Parse("/etc/edgegate/c.yaml", []byte(mtls(crl)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.VHosts[0].ClientAuth.CRL; !slices.Equal(got, FileList(want)) {
			t.Errorf("crl: %s decoded as %v", crl, got)
		}
		for _, f := range want {
			if !slices.Contains(cfg.Files(), "/etc/edgegate/"+f) {
				t.Errorf("Files() %v lacks %s", cfg.Files(), f)
			}
		}
	}
	for crl, want := range map[string]string{
		"{file: a}":   "c.yaml:10: want a file name or a list of file names",
		"[a, [b]]":    "c.yaml:10: want a file name or a list of file names",
		`[a.crl, ""]`: `c.yaml:10: vhost "a": client_auth.crl: empty file name`,
	} {
		_, err := Parse("c.yaml", []byte(mtls(crl)), nil)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("crl: %s: error %v, want %q", crl, err, want)
		}
	}
}
