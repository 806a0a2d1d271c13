package main_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"go.yaml.in/yaml/v3"

	"github.com/edgegate/edgegate/bpf/netnstest"
	"github.com/edgegate/edgegate/gateway/eventually"
	"github.com/edgegate/edgegate/gateway/testpki"
)

const (
	rulesFile     = "../../deploy/prometheus/edgegate.rules.yml"
	dashboardFile = "../../deploy/grafana/edgegate.json"
)

// TestPrometheusRulesValid has Prometheus's own checker read the rules file.
func TestPrometheusRulesValid(t *testing.T) {
	t.Parallel()
	promtool := requireTool(t, "promtool")
	out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules: %s", out)
	}
}

var (
	promqlString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promqlRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	labelValues    = regexp.MustCompile(`^\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
	promqlKeywords = []string{"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
		"group_left", "group_right", "inf", "nan", "atan2"}
)

// promqlMetrics returns the metric names a PromQL expression (or a Grafana
// label_values(METRIC, LABEL) variable query) selects: identifiers that are
// not functions, keywords, labels, strings, durations or numbers.
func promqlMetrics(expr string) []string {
	if m := labelValues.FindStringSubmatch(expr); m != nil {
		return []string{m[1]}
	}
	e := promqlString.ReplaceAllString(expr, `""`)
	e = promqlMatchers.ReplaceAllString(e, "{}")
	e = promqlRange.ReplaceAllString(e, "[]")
	e = promqlGrouping.ReplaceAllString(e, "")
	var out []string
	for _, loc := range promqlIdent.FindAllStringIndex(e, -1) {
		name := e[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsRune("0123456789.", rune(e[loc[0]-1])) {
			continue // 1e3, 5m, 1d
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		if slices.Contains(promqlKeywords, strings.ToLower(name)) || slices.Contains(out, name) {
			continue
		}
		out = append(out, name)
	}
	return out
}

func TestPromQLMetrics(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up{job="edgegate"} == 0`, []string{"up"}},
		{`increase(edgegate_config_reload_total{result="error"}[15m]) > 0`, []string{"edgegate_config_reload_total"}},
		{"sum by (vhost, reason) (rate(a_total{reason!=\"x\"}[5m]))\n  > 5 * sum by (vhost) (rate(a_total[1h] offset 1d)) + 0.1", []string{"a_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(h_bucket{vhost=~"$vhost"}[$__rate_interval])))`, []string{"h_bucket"}},
		{`process_open_fds / process_max_fds > 1e3`, []string{"process_open_fds", "process_max_fds"}},
		{`a / on (instance) group_left (version) b`, []string{"a", "b"}},
		{`label_values(edgegate_build_info, instance)`, []string{"edgegate_build_info"}},
		{`sum(x{l="and or by (y)"}) or vector(0)`, []string{"x"}},
	} {
		if got := promqlMetrics(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("promqlMetrics(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// ruleExprs returns every expr of the rules file, by alert or record name.
func ruleExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert, Record, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out["rule "+r.Alert+r.Record] = r.Expr
		}
	}
	if len(out) < 10 {
		t.Fatalf("%s has %d rules; want the alerts of docs/operations.md", rulesFile, len(out))
	}
	return out
}

// dashboardExprs returns every query of the dashboard: each panel's
// targets (rows' panels included), variable queries and annotations.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string
		Targets []struct{ RefID, Expr string }
		Panels  []json.RawMessage
	}
	var d struct {
		Panels     []panel
		Templating struct {
			List []struct {
				Name, Type string
				Query      json.RawMessage
			}
		}
		Annotations struct {
			List []struct{ Name, Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	out := map[string]string{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
				}
				out["panel "+p.Title+" "+tg.RefID] = tg.Expr
			}
			var inner []panel
			for _, raw := range p.Panels {
				var ip panel
				if err := json.Unmarshal(raw, &ip); err != nil {
					t.Fatal(err)
				}
				inner = append(inner, ip)
			}
			walk(inner)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
			q.Query = s
		}
		out["variable "+v.Name] = q.Query
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			out["annotation "+a.Name] = a.Expr
		}
	}
	if len(out) < 10 {
		t.Fatalf("%s has %d queries", dashboardFile, len(out))
	}
	return out
}

// TestDashboardCoversTheIssue: the dashboard shows what an operator looks
// at first: connections by outcome, refusals by reason, handshake and
// connect latency, guard verdicts, blocklist size and reloads.
func TestDashboardCoversTheIssue(t *testing.T) {
	t.Parallel()
	exprs := dashboardExprs(t)
	var all []string
	for _, e := range exprs {
		all = append(all, e)
	}
	joined := strings.Join(all, "\n")
	for _, want := range []string{
		"sum by (outcome) (rate(edgegate_connections_total",
		"sum by (vhost, reason) (rate(edgegate_mtls_rejections_total",
		"edgegate_tls_handshake_seconds_bucket",
		"edgegate_upstream_connect_seconds_bucket",
		"sum by (verdict) (rate(edgegate_bpf_packets_total",
		`edgegate_bpf_map_entries{instance=~"$instance", map="blocklist"}`,
		"edgegate_config_reload_total",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("no dashboard query has %s", want)
		}
	}
}

// TestRulesAndDashboardUseExportedMetrics runs the real binary with the
// eBPF guard attached, an mtls and a passthrough vhost, drives the events
// after which metrics appear (a proxied connection of each mode, a refused
// client certificate, junk the guard drops, a reload), scrapes /metrics, and
// checks that every metric each alerting rule and each dashboard query
// selects is on the page. Only `up` is exempt: Prometheus makes it.
func TestRulesAndDashboardUseExportedMetrics(t *testing.T) {
	t.Parallel()
	queries := ruleExprs(t)
	for k, v := range dashboardExprs(t) {
		queries[k] = v
	}
	netnstest.NeedBPF(t)
	nsenter := requireTool(t, "nsenter")
	ns := netnstest.New(t, netnstest.Options{Prefix: "egm", ServerVeth: "egms0", ClientVeth: "egmc0"})
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("edgegate-cli-test-%d", os.Getpid()))
	t.Cleanup(func() { os.RemoveAll(pin) })

	ca, err := testpki.NewCA("edgegate observability test CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	server, err := ca.Server("app.e2e.test", "www.e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := testpki.WritePEM(dir, "server", server); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "ca.pem", string(ca.PEM))
	client, err := ca.Client("origin-pull client")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	// Upstreams in the server namespace, which the gateway dials from.
	inServer := func() net.Listener {
		ln, err := netnstest.In(ns.Server, func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	passUp, appUp := inServer(), inServer()
	serveUpstream(passUp, &tls.Config{Certificates: []tls.Certificate{server}})
	serveUpstream(appUp, nil)

	const listen, metrics = "198.18.0.1:443", "198.18.0.1:9090"
	cfgText := yamlf(`
listen: [{address: %q}]
metrics: {listen: %q}
log: {level: info, format: json}
ebpf:
  enabled: true
  interfaces: [egms0]
  required: true
  pin_path: %q
vhosts:
  - {name: www, hosts: [www.e2e.test], mode: passthrough, upstream: {address: %q}}
  - name: app
    hosts: [app.e2e.test]
    mode: mtls
    tls:
      certificates: [{cert: server.crt, key: server.key}]
    client_auth: {ca: ca.pem}
    upstream: {address: %q}
`, listen, metrics, pin, passUp.Addr().String(), appUp.Addr().String())
	cfg := writeFile(t, dir, "edgegate.yaml", cfgText)
	p := startEdgegateVia(t, nsenter, "--net=/run/netns/"+ns.Server, "--", edgegateBin, "run", "--config", cfg)
	p.stderr.waitJSON(t, "that it is running", msgIs("edgegate running"))

	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return netnstest.In(ns.Client, func() (net.Conn, error) {
			d := net.Dialer{Timeout: waitLimit}
			return d.DialContext(ctx, network, addr)
		})
	}
	tlsDial := func(cfg *tls.Config) (*tls.Conn, error) {
		raw, err := dial(context.Background(), "tcp", listen)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, cfg)
		c.SetDeadline(time.Now().Add(waitLimit))
		return c, c.Handshake()
	}
	echo := func(c *tls.Conn) {
		t.Helper()
		defer c.Close()
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		if got, err := bufio.NewReader(c).ReadString('\n'); got != "ping\n" {
			t.Fatalf("echo through the gateway: %q, %v", got, err)
		}
	}
	// Passthrough and mtls, proxied.
	c, err := tlsDial(&tls.Config{ServerName: "www.e2e.test", RootCAs: roots})
	if err != nil {
		t.Fatalf("passthrough: %v", err)
	}
	echo(c)
	c, err = tlsDial(&tls.Config{ServerName: "app.e2e.test", RootCAs: roots, Certificates: []tls.Certificate{client}})
	if err != nil {
		t.Fatalf("mtls: %v", err)
	}
	echo(c)
	// A client without a certificate: refused.
	if c, err = tlsDial(&tls.Config{ServerName: "app.e2e.test", RootCAs: roots}); err == nil {
		c.Read(make([]byte, 1))
		c.Close()
	}
	// Junk, dropped in the kernel: the client never gets an answer.
	if raw, err := dial(context.Background(), "tcp", listen); err == nil {
		raw.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		raw.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		raw.Read(make([]byte, 1))
		raw.Close()
	}
	// A reload.
	p.signal(t, syscall.SIGHUP)
	p.stderr.waitJSON(t, "the reload", msgIs("configuration reloaded"))

	hc := &http.Client{Timeout: waitLimit, Transport: &http.Transport{DialContext: dial}}
	scrape := func() map[string]bool {
		t.Helper()
		resp, err := hc.Get("http://" + metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{"up": true} // made by Prometheus for each scrape
		for _, l := range strings.Split(string(b), "\n") {
			if l == "" || l[0] == '#' {
				continue
			}
			names[strings.FieldsFunc(l, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
		}
		return names
	}
	var names map[string]bool
	eventually.Within(t, waitLimit, func() error {
		names = scrape()
		for _, want := range []string{`edgegate_mtls_rejections_total`, `edgegate_config_reload_total`, `edgegate_bpf_packets_total`} {
			if !names[want] {
				return fmt.Errorf("/metrics has no %s yet", want)
			}
		}
		return nil
	})
	for what, expr := range queries {
		ms := promqlMetrics(expr)
		if len(ms) == 0 {
			t.Errorf("%s: no metric found in %q", what, expr)
		}
		for _, m := range ms {
			if !names[m] {
				t.Errorf("%s uses %s, which the running edgegate does not export (expr %q)", what, m, expr)
			}
		}
	}
	if t.Failed() {
		var have []string
		for n := range names {
			have = append(have, n)
		}
		slices.Sort(have)
		t.Logf("exported: %s", strings.Join(have, " "))
	}
}

// serveUpstream answers connections on ln after their PROXY header: with
// tc, as a TLS server (a passthrough upstream), else in cleartext (an mtls
// upstream); either way it echoes every line back.
func serveUpstream(ln net.Listener, tc *tls.Config) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * waitLimit))
				br := bufio.NewReader(c)
				if _, err := proxyproto.Read(br); err != nil {
					return
				}
				var rw io.ReadWriter = bufConn{c, br}
				if tc != nil {
					s := tls.Server(bufConn{c, br}, tc)
					if s.Handshake() != nil {
						return
					}
					rw = s
				}
				io.Copy(rw, rw)
			}()
		}
	}()
}

// startEdgegateVia starts edgegate through another program (nsenter), as
// startEdgegate does it directly.
func startEdgegateVia(t *testing.T, prog string, args ...string) *gateProc {
	t.Helper()
	p := &gateProc{cmd: exec.Command(prog, args...), exited: make(chan struct{})}
	p.stdout, p.stderr = newOutput(p.exited), newOutput(p.exited)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.Dir = t.TempDir()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", prog, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(waitLimit):
				p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("%s %s\nstderr:\n%s", prog, strings.Join(args, " "), p.stderr.text())
		}
	})
	return p
}

// TestBuildInfoMetric: edgegate_build_info is 1 with the version `edgegate
// version` prints and the Go release the binary was built with.
func TestBuildInfoMetric(t *testing.T) {
	t.Parallel()
	stdout, _, _ := runEdgegate(t, "version")
	f := strings.Fields(stdout)
	if len(f) < 3 {
		t.Fatalf("edgegate version printed %q", stdout)
	}
	version, goversion := f[1], strings.TrimSuffix(strings.TrimPrefix(f[2], "("), ",")
	metrics := freeAddr(t)
	startGateway(t, gatewayConfig(freeAddr(t), metrics, "127.0.0.1:9", "info", "json", "30s"), true)
	_, page := httpGet(t, "http://"+metrics+"/metrics")
	if v, ok := metricValue(page, "edgegate_build_info", `version="`+version+`"`, `goversion="`+goversion+`"`); !ok || v != 1 {
		t.Errorf("edgegate_build_info{version=%q,goversion=%q} = %v (present %t), want 1\n%s", version, goversion, v, ok, page)
	}
}
