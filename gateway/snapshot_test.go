package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/gateway/config"
)

// TestCompileErrors checks errors only loading files can find (mtls
// certificates) carry FILE:LINE too.
func TestCompileErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edgegate.yaml")
	os.WriteFile(path, []byte(`listen: [{address: "127.0.0.1:0"}]
vhosts:
  - name: app
    hosts: [app.example]
    mode: mtls
    tls:
      certificates:
        - {cert: missing.crt, key: missing.key}
    upstream: {address: "127.0.0.1:1"}
`), 0o644)
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewServer(cfg, nil)
	if err == nil || !strings.HasPrefix(err.Error(), path+":8: ") || !strings.Contains(err.Error(), "missing.crt") {
		t.Fatalf("error %v; want %s:8: ... missing.crt", err, path)
	}
}

func TestRoutes(t *testing.T) {
	cfg, err := config.Parse("c.yaml", []byte(`listen: [{address: ":443"}]
vhosts:
  - {name: app, hosts: [app.example.com], mode: passthrough, upstream: {address: "1.2.3.4:5"}}
  - {name: wild, hosts: ["*.example.com", "EXACT.other.test"], mode: passthrough, upstream: {address: "1.2.3.4:5"}}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := compile(cfg, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"app.example.com":   "app",  // exact beats wildcard
		"a.example.com":     "wild", // one label
		"example.com":       "",     // the wildcard's parent is not covered
		"a.b.example.com":   "",     // nor two labels
		"exact.other.test":  "wild", // names were normalised at load
		"other.test":        "",
		"":                  "",
		"xapp.example.com":  "wild",
		"app.example.com.x": "",
	} {
		got := ""
		if v := st.routes.lookup(name); v != nil {
			got = v.name
		}
		if got != want {
			t.Errorf("lookup(%q) = %q, want %q", name, got, want)
		}
	}
}
