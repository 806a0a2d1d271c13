package gateway

import (
	"go/build"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestImportsPointOneWay keeps the rooms' dependencies one way: the server
// (this package) may use every room, configuration only the reference data
// and wire formats it validates against, and the data path's rooms nothing
// of edgegate's at all; no package imports a command.
func TestImportsPointOneWay(t *testing.T) {
	const module = "github.com/edgegate/edgegate/"
	allowed := map[string][]string{
		"gateway/config":      {"gateway/cloudflare", "gateway/proxyheader", "sni"},
		"gateway/cloudflare":  nil,
		"gateway/clientauth":  nil,
		"gateway/proxyheader": nil,
		"gateway/relay":       nil,
		"gateway/upstream":    {"gateway/config"},
		"gateway/eventually":  nil,
		"sni":                 nil,
		"bpf":                 nil,
		"gateway": {"gateway/config", "gateway/cloudflare", "gateway/clientauth", "gateway/proxyheader",
			"gateway/relay", "gateway/upstream", "sni", "bpf"},
	}
	for pkg, may := range allowed {
		p, err := build.ImportDir(filepath.Join("..", pkg), 0)
		if err != nil {
			t.Fatalf("%s: %v", pkg, err)
		}
		for _, imp := range p.Imports {
			own, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if !slices.Contains(may, own) {
				t.Errorf("%s imports %s; its rooms may use only %v", pkg, own, may)
			}
		}
	}
}
