package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gatewayConfig is a run configuration with one passthrough vhost "www"
// for www.e2e.test in front of upstream.
func gatewayConfig(listen, metrics, upstream, logLevel, logFormat, drain string) string {
	return yamlf(`
listen:
  - address: %q
timeouts: {drain: %s}
metrics: {listen: %q}
log: {level: %s, format: %s}
vhosts:
  - name: www
    hosts: ["www.e2e.test"]
    mode: passthrough
    upstream: {address: %q, proxy_protocol: v2}
`, listen, drain, metrics, logLevel, logFormat, upstream)
}

// startGateway runs `edgegate run` on cfgText and waits until it says it is
// running (its listeners are bound by then).
func startGateway(t *testing.T, cfgText string, jsonLog bool) (*gateProc, string) {
	t.Helper()
	cfg := writeFile(t, t.TempDir(), "edgegate.yaml", cfgText)
	p := startEdgegate(t, "run", "--config", cfg)
	if jsonLog {
		p.stderr.waitJSON(t, "that it is running", msgIs("edgegate running"))
	} else {
		p.stderr.waitFor(t, "that it is running", func(l string) bool { return strings.Contains(l, `msg="edgegate running"`) })
	}
	return p, cfg
}

// httpGet fetches a metrics endpoint URL.
func httpGet(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Timeout: waitLimit}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp, string(b)
}

// healthz is the /healthz document.
type healthz struct {
	Listeners  int    `json:"listeners"`
	Generation int    `json:"generation"`
	Guard      string `json:"guard"`
	Draining   bool   `json:"draining"`
}

func getHealthz(t *testing.T, metricsAddr string) (int, healthz) {
	t.Helper()
	resp, body := httpGet(t, "http://"+metricsAddr+"/healthz")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("/healthz Content-Type %q, want application/json", ct)
	}
	var h healthz
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("/healthz is not the expected JSON (%v): %s", err, body)
	}
	return resp.StatusCode, h
}

// metricValue returns the value of the sample of name whose labels include
// all of labels, from a /metrics page; ok is false when there is none.
func metricValue(page, name string, labels ...string) (v float64, ok bool) {
	for _, l := range strings.Split(page, "\n") {
		if !strings.HasPrefix(l, name+"{") {
			continue
		}
		end := strings.LastIndexByte(l, '}')
		set := strings.Split(l[len(name)+1:end], ",")
		match := true
		for _, want := range labels {
			found := false
			for _, have := range set {
				found = found || have == want
			}
			match = match && found
		}
		if match {
			v, err := strconv.ParseFloat(strings.TrimSpace(l[end+1:]), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// expectNoResponse asserts that the gateway closed c without a byte.
func expectNoResponse(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		t.Errorf("client received %d bytes (%q); want none", len(b), b[:min(len(b), 32)])
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("connection still open; want it closed")
	}
}

// TestRunJSONLogAndMetrics runs the gateway with a JSON log at debug level
// and checks what an operator sees for one junk and one proxied connection:
// exactly one log record each with every documented field, the proxied one
// counted in /metrics, and /healthz.
func TestRunJSONLogAndMetrics(t *testing.T) {
	t.Parallel()
	up := newTLSUpstream(t, "www.e2e.test")
	listen, metrics := freeAddr(t), freeAddr(t)
	p, _ := startGateway(t, gatewayConfig(listen, metrics, up.ln.Addr().String(), "debug", "json", "30s"), true)

	// A scanner speaking HTTP to the TLS port: closed without a byte.
	junk, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	junkClient := junk.LocalAddr().String()
	if _, err := junk.Write([]byte("GET / HTTP/1.1\r\nHost: www.e2e.test\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	expectNoResponse(t, junk)

	// A passthrough connection: TLS end to end with the upstream, which
	// reads edgegate's PROXY header first.
	ec, err := dialEcho(listen, "www.e2e.test", up.roots)
	if err != nil {
		t.Fatalf("TLS through edgegate to the upstream: %v", err)
	}
	uc := up.next(t)
	if uc.err != nil {
		t.Fatalf("upstream: %v", uc.err)
	}
	proxiedClient := ec.conn.LocalAddr().String()
	if got := uc.header.SourceAddr.String(); got != proxiedClient {
		t.Errorf("PROXY header source %s, want the client %s", got, proxiedClient)
	}
	if got := uc.header.DestinationAddr.String(); got != listen {
		t.Errorf("PROXY header destination %s, want the listener %s", got, listen)
	}
	if uc.sni != "www.e2e.test" {
		t.Errorf("upstream saw SNI %q", uc.sni)
	}
	if got, err := ec.roundTrip("hello upstream"); err != nil || got != "hello upstream" {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	if got, err := ec.roundTrip("quit"); err != nil || got != "bye" {
		t.Fatalf("quit: %q, %v", got, err)
	}
	ec.conn.Close()

	p.stderr.waitJSON(t, "the proxied connection", func(r map[string]any) bool {
		return r["msg"] == "connection" && r["client"] == proxiedClient
	})
	_, page := httpGet(t, "http://"+metrics+"/metrics")
	if v, ok := metricValue(page, "edgegate_connections_total", `listener="`+listen+`"`, `vhost="www"`, `outcome="proxied"`); !ok || v != 1 {
		t.Errorf("edgegate_connections_total{listener=%q,vhost=\"www\",outcome=\"proxied\"} = %v (present %t), want 1", listen, v, ok)
	}
	if v, ok := metricValue(page, "edgegate_connections_total", `vhost=""`, `outcome="closed_not_tls"`); !ok || v != 1 {
		t.Errorf("edgegate_connections_total{outcome=\"closed_not_tls\"} = %v (present %t), want 1", v, ok)
	}
	if v, ok := metricValue(page, "edgegate_bytes_total", `vhost="www"`, `direction="to_client"`); !ok || v <= 0 {
		t.Errorf("edgegate_bytes_total{vhost=\"www\",direction=\"to_client\"} = %v (present %t), want > 0", v, ok)
	}
	code, h := getHealthz(t, metrics)
	if code != http.StatusOK || h != (healthz{Listeners: 1, Generation: 1, Guard: "off"}) {
		t.Errorf("/healthz: %d %+v, want 200 {listeners:1 generation:1 guard:off draining:false}", code, h)
	}

	// Stop the gateway so that every record is written, then read them all.
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	if out := p.stdout.text(); strings.TrimSpace(out) != "" {
		t.Errorf("run wrote to stdout (the log belongs on stderr): %q", out)
	}
	perClient := map[string][]map[string]any{}
	for _, r := range p.stderr.records(t) {
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := r[k]; !ok {
				t.Errorf("log record without %q: %v", k, r)
			}
		}
		if r["msg"] == "connection" {
			c, _ := r["client"].(string)
			perClient[c] = append(perClient[c], r)
		}
	}
	if len(perClient) != 2 {
		t.Errorf("connection records for %d clients, want 2 (junk %s, proxied %s): %v", len(perClient), junkClient, proxiedClient, perClient)
	}
	for _, want := range []struct {
		client string
		level  string
		fields map[string]any
	}{
		{junkClient, "DEBUG", map[string]any{"listener": listen, "vhost": "", "mode": "", "outcome": "closed_not_tls",
			"bytes_to_upstream": 0.0, "bytes_to_client": 0.0}},
		{proxiedClient, "INFO", map[string]any{"listener": listen, "sni": "www.e2e.test", "vhost": "www", "mode": "passthrough", "outcome": "proxied"}},
	} {
		recs := perClient[want.client]
		if len(recs) != 1 {
			t.Errorf("client %s: %d connection records, want exactly 1: %v", want.client, len(recs), recs)
			continue
		}
		r := recs[0]
		if r["level"] != want.level {
			t.Errorf("client %s: level %v, want %s", want.client, r["level"], want.level)
		}
		for k, v := range want.fields {
			if r[k] != v {
				t.Errorf("client %s: %s = %#v, want %#v (record %v)", want.client, k, r[k], v, r)
			}
		}
		for _, k := range []string{"time", "client", "listener", "vhost", "mode", "outcome", "bytes_to_upstream", "bytes_to_client", "duration"} {
			if _, ok := r[k]; !ok {
				t.Errorf("client %s: record has no %q: %v", want.client, k, r)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(r["time"])); err != nil {
			t.Errorf("client %s: time %v: %v", want.client, r["time"], err)
		}
		if d, ok := r["duration"].(float64); !ok || d <= 0 {
			t.Errorf("client %s: duration %#v, want a positive number", want.client, r["duration"])
		}
	}
	if r := perClient[proxiedClient]; len(r) == 1 {
		// The client's hello and two lines went up; the server's handshake
		// flight and two lines came back.
		if up, _ := r[0]["bytes_to_upstream"].(float64); up < 100 {
			t.Errorf("bytes_to_upstream %v, want at least the ClientHello", r[0]["bytes_to_upstream"])
		}
		if down, _ := r[0]["bytes_to_client"].(float64); down < 100 {
			t.Errorf("bytes_to_client %v, want at least the server's handshake", r[0]["bytes_to_client"])
		}
	}
}

// TestRunRefusesToStart: `edgegate run` with a broken file exits 1 with the
// FILE:LINE error alone on stderr, and so does an address it cannot bind
// (the address's line), instead of running without a listener.
func TestRunRefusesToStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	broken := writeFile(t, dir, "broken.yaml", yamlf(`
listen:
  - address: "127.0.0.1:0"
vhosts:
  - name: www
    hosts: ["www.e2e.test"]
    mode: passthrough
    upstream: {address: "127.0.0.1:9001", proxy_protocol: v3}
`))
	stdout, stderr, code := runEdgegate(t, "run", "--config", broken)
	if code != 1 || stdout != "" {
		t.Errorf("run with a broken config: exit %d, stdout %q; want 1 and nothing", code, stdout)
	}
	if want := broken + `:7: vhost "www": upstream.proxy_protocol "v3": want off, v1 or v2` + "\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}

	// Held without SO_REUSEPORT, so edgegate cannot share it.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct{ name, listen, metrics, want string }{
		{"listener", busy.Addr().String(), freeAddr(t), `:2: listen address "` + busy.Addr().String() + `": bind: address already in use`},
		{"metrics", freeAddr(t), busy.Addr().String(), `:4: metrics.listen "` + busy.Addr().String() + `": bind: address already in use`},
	} {
		cfg := writeFile(t, dir, tc.name+".yaml", gatewayConfig(tc.listen, tc.metrics, "127.0.0.1:9001", "info", "json", "30s"))
		stdout, stderr, code := runEdgegate(t, "run", "--config", cfg)
		if code != 1 || stdout != "" {
			t.Errorf("%s address in use: exit %d, stdout %q; want 1 and nothing", tc.name, code, stdout)
		}
		if want := cfg + tc.want + "\n"; stderr != want {
			t.Errorf("%s address in use: stderr %q, want %q alone", tc.name, stderr, want)
		}
		if strings.Contains(stderr, "edgegate running") {
			t.Errorf("%s address in use: edgegate claims to be running:\n%s", tc.name, stderr)
		}
	}
}
