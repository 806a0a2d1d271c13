package main_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// expectClosedSilently dials addr with a TLS ClientHello for sni and
// asserts the gateway closes it without a byte (an unknown name).
func expectClosedSilently(t *testing.T, addr, sni string, up *tlsUpstream) {
	t.Helper()
	_, err := dialEcho(addr, sni, up.roots)
	if err == nil {
		t.Fatalf("TLS to %s succeeded; want the connection closed for an unknown name", sni)
	}
	if !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
		t.Errorf("TLS to %s: %v; want end-of-stream with no response", sni, err)
	}
}

// expectProxied makes one exchange through the gateway for sni.
func expectProxied(t *testing.T, addr, sni string, up *tlsUpstream) {
	t.Helper()
	ec, err := dialEcho(addr, sni, up.roots)
	if err != nil {
		t.Fatalf("TLS through edgegate for %s: %v", sni, err)
	}
	defer ec.conn.Close()
	if uc := up.next(t); uc.err != nil || uc.sni != sni {
		t.Fatalf("upstream: sni %q, %v; want %s", uc.sni, uc.err, sni)
	}
	if got, err := ec.roundTrip("hi " + sni); err != nil || got != "hi "+sni {
		t.Fatalf("round trip for %s: %q, %v", sni, got, err)
	}
}

// TestReloadOnSIGHUP: SIGHUP with a new vhost routes new connections to it
// on the same listener; SIGHUP with a broken file (a YAML error, then a
// missing certificate) keeps the running configuration and logs FILE:LINE.
func TestReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	www := newTLSUpstream(t, "www.e2e.test")
	news := newTLSUpstream(t, "new.e2e.test")
	listen, metrics := freeAddr(t), freeAddr(t)
	base := gatewayConfig(listen, metrics, www.ln.Addr().String(), "debug", "json", "30s")
	p, cfg := startGateway(t, base, true)

	expectProxied(t, listen, "www.e2e.test", www)
	expectClosedSilently(t, listen, "new.e2e.test", news)

	// An open connection must survive the reload untouched.
	held, err := dialEcho(listen, "www.e2e.test", www.roots)
	if err != nil {
		t.Fatal(err)
	}
	defer held.conn.Close()
	www.next(t)

	added := base + yamlf(`
  - name: new
    hosts: ["new.e2e.test"]
    mode: passthrough
    upstream: {address: %q}
`, news.ln.Addr().String())
	writeFile(t, filepath.Dir(cfg), "edgegate.yaml", added)
	p.signal(t, syscall.SIGHUP)
	p.stderr.waitJSON(t, "the reload to generation 2", func(r map[string]any) bool {
		return r["msg"] == "configuration reloaded" && r["generation"] == 2.0
	})
	expectProxied(t, listen, "new.e2e.test", news)
	expectProxied(t, listen, "www.e2e.test", www)
	if got, err := held.roundTrip("still here"); err != nil || got != "still here" {
		t.Fatalf("connection opened before the reload: %q, %v", got, err)
	}
	if code, h := getHealthz(t, metrics); code != 200 || h.Generation != 2 {
		t.Errorf("/healthz after the reload: %d %+v, want generation 2", code, h)
	}

	// Broken files: each is refused with FILE:LINE and generation 2 serves on.
	missingCert := added + yamlf(`
  - name: app
    hosts: ["app.e2e.test"]
    mode: mtls
    tls:
      certificates: [{cert: missing.crt, key: missing.key}]
    upstream: {address: "127.0.0.1:9"}
`)
	for i, broken := range []struct {
		name, yaml, key string
	}{
		{"unknown key", added + "    proxy_protocl: v1\n", `unknown key "proxy_protocl"`},
		{"missing certificate", missingCert, "missing.crt"},
	} {
		wantLine := strings.Count(broken.yaml, "\n")
		if broken.key == "missing.crt" {
			wantLine = strings.Count(added, "\n") + 5
		}
		writeFile(t, filepath.Dir(cfg), "edgegate.yaml", broken.yaml)
		p.signal(t, syscall.SIGHUP)
		wantPrefix := fmt.Sprintf("%s:%d: ", cfg, wantLine)
		rec := p.stderr.waitJSON(t, "the refused reload ("+broken.name+")", func(r map[string]any) bool {
			e, _ := r["err"].(string)
			return r["msg"] == "reload refused; keeping the running configuration" && strings.Contains(e, broken.key)
		})
		if e := rec["err"].(string); !strings.HasPrefix(e, wantPrefix) {
			t.Errorf("%s: err %q, want it to start with %q", broken.name, e, wantPrefix)
		}
		if rec["level"] != "ERROR" {
			t.Errorf("%s: logged at %v, want ERROR", broken.name, rec["level"])
		}
		expectProxied(t, listen, "new.e2e.test", news)
		expectProxied(t, listen, "www.e2e.test", www)
		if code, h := getHealthz(t, metrics); code != 200 || h.Generation != 2 {
			t.Errorf("%s: /healthz after the refused reload: %d %+v, want generation 2", broken.name, code, h)
		}
		refusals := 0
		for _, r := range p.stderr.records(t) {
			if r["msg"] == "reload refused; keeping the running configuration" {
				refusals++
			}
		}
		if refusals != i+1 {
			t.Errorf("after %d broken reloads the log has %d refusal records, want one each", i+1, refusals)
		}
	}
	if got, err := held.roundTrip("still here after the refusals"); err != nil || got != "still here after the refusals" {
		t.Fatalf("connection opened before the reloads: %q, %v", got, err)
	}

	_, page := httpGet(t, "http://"+metrics+"/metrics")
	if v, ok := metricValue(page, "edgegate_config_reload_total", `result="ok"`); !ok || v != 1 {
		t.Errorf("edgegate_config_reload_total{result=\"ok\"} = %v (present %t), want 1", v, ok)
	}
	// Both refusals count: the unknown key (the file does not load) and the
	// missing certificate (it does not compile).
	if v, ok := metricValue(page, "edgegate_config_reload_total", `result="error"`); !ok || v != 2 {
		t.Errorf("edgegate_config_reload_total{result=\"error\"} = %v (present %t), want 2", v, ok)
	}
	if !strings.Contains(page, "\nedgegate_config_generation 2\n") {
		t.Error("edgegate_config_generation is not 2")
	}

	p.signal(t, syscall.SIGTERM)
	held.roundTrip("quit")
	held.conn.Close()
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
}

// TestReloadMovesListener: a reload that changes the listen address opens
// the new one and closes the old one, in the same process.
func TestReloadMovesListener(t *testing.T) {
	t.Parallel()
	up := newTLSUpstream(t, "www.e2e.test")
	first, second, metrics := freeAddr(t), freeAddr(t), freeAddr(t)
	p, cfg := startGateway(t, gatewayConfig(first, metrics, up.ln.Addr().String(), "info", "json", "30s"), true)
	expectProxied(t, first, "www.e2e.test", up)

	writeFile(t, filepath.Dir(cfg), "edgegate.yaml", gatewayConfig(second, metrics, up.ln.Addr().String(), "info", "json", "30s"))
	p.signal(t, syscall.SIGHUP)
	p.stderr.waitJSON(t, "the reload to generation 2", func(r map[string]any) bool {
		return r["msg"] == "configuration reloaded" && r["generation"] == 2.0
	})
	expectProxied(t, second, "www.e2e.test", up)
	expectRefused(t, first)
	if code, h := getHealthz(t, metrics); code != 200 || h.Listeners != 1 {
		t.Errorf("/healthz after moving the listener: %d %+v, want 200 and 1 listener", code, h)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
}
