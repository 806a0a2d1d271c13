package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// The tests in this file play the attacker against mtls vhosts: every way
// to reach an mtls upstream without a verified client certificate must end
// in a silent close, with the upstream never dialled.

// stealCache is a client session cache that offers the first session it was
// given for every server: a client replaying a ticket where it was not
// issued.
type stealCache struct {
	mu sync.Mutex
	s  *tls.ClientSessionState
}

func (c *stealCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.s, c.s != nil
}

func (c *stealCache) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.s == nil && cs != nil {
		c.s = cs
	}
}

// ticketFrom makes a verified connection to sni and returns a cache holding
// the session ticket it was issued.
func ticketFrom(t *testing.T, addr, sni string, p *pki, version uint16, cert tls.Certificate) *stealCache {
	t.Helper()
	cache := &stealCache{}
	c, _, err := dialTLS(t, addr, &tls.Config{ServerName: sni, RootCAs: p.roots, Certificates: []tls.Certificate{cert},
		MinVersion: version, MaxVersion: version, ClientSessionCache: cache})
	if err != nil {
		t.Fatalf("first handshake: %v", err)
	}
	c.Write([]byte("PING\n"))
	c.CloseWrite()
	// Reading processes the TLS 1.3 NewSessionTicket.
	if b, _ := io.ReadAll(c); string(b) != "PONG" {
		t.Fatalf("first connection got %q", b)
	}
	c.Close()
	if cache.s == nil {
		t.Fatal("no session ticket was issued")
	}
	return cache
}

// TestResumptionCannotSkipTheCertificate presents a ticket from vhost A on
// vhost B, and a ticket issued before a CA change after it: both must force
// a full handshake that demands a certificate.
func TestResumptionCannotSkipTheCertificate(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	dir := t.TempDir()
	cfgText := func(caFile string) string {
		return mtlsConfig(p, "127.0.0.1:0", up.address(), yamlf(`
  - name: b
    hosts: [other.example.test]
    mode: mtls
    tls: {certificates: [{cert: %q, key: %q}]}
    client_auth: {ca: %q}
    upstream: {address: %q}
`, p.certFile, p.keyFile, caFile, up.address()))
	}
	s := startServerIn(t, dir, cfgText(p.caFile))
	addr := s.addr(t, "127.0.0.1:0")
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			// Control: the ticket does resume on the vhost that issued it.
			cache := ticketFrom(t, addr, "app.example.test", p, version, p.clients["valid"])
			c, _, err := dialTLS(t, addr, &tls.Config{ServerName: "app.example.test", RootCAs: p.roots,
				MinVersion: version, MaxVersion: version, ClientSessionCache: cache})
			if err != nil || !c.ConnectionState().DidResume {
				t.Fatalf("control: same-vhost resumption err %v resumed %v; the test would prove nothing", err, err == nil && c.ConnectionState().DidResume)
			}
			c.Close()
			up.next(t)
			up.next(t)

			// Attack: A's ticket, no certificate, on vhost B.
			c, rc, err := dialTLS(t, addr, &tls.Config{ServerName: "other.example.test", RootCAs: p.roots,
				MinVersion: version, MaxVersion: version, ClientSessionCache: cache})
			if err == nil && c.ConnectionState().DidResume {
				t.Fatal("vhost B resumed a session vhost A issued")
			}
			expectRefused(t, c, rc, err)

			// With a valid certificate B works, by a full handshake.
			c, _, err = dialTLS(t, addr, &tls.Config{ServerName: "other.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]},
				MinVersion: version, MaxVersion: version, ClientSessionCache: cache})
			if err != nil || c.ConnectionState().DidResume {
				t.Fatalf("B with a certificate: err %v", err)
			}
			c.Close()
			up.next(t)
		})
	}

	t.Run("after a CA change", func(t *testing.T) {
		cache := ticketFrom(t, addr, "other.example.test", p, tls.VersionTLS13, p.clients["valid"])
		up.next(t)
		newCA, err := testpki.NewCA("replacement origin-pull CA")
		if err != nil {
			t.Fatal(err)
		}
		newCAFile := filepath.Join(dir, "new-ca.pem")
		os.WriteFile(newCAFile, newCA.PEM, 0o644)
		os.WriteFile(filepath.Join(dir, "edgegate.yaml"), []byte(cfgText(newCAFile)), 0o644)
		cfg, err := config.Load(filepath.Join(dir, "edgegate.yaml"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Reload(cfg); err != nil {
			t.Fatal(err)
		}
		c, rc, err := dialTLS(t, addr, &tls.Config{ServerName: "other.example.test", RootCAs: p.roots, ClientSessionCache: cache})
		if err == nil && c.ConnectionState().DidResume {
			t.Fatal("a ticket issued under the old CA resumed after the CA changed")
		}
		expectRefused(t, c, rc, err)
		// The old CA's client certificate is refused outright now.
		c, rc, err = dialTLS(t, addr, &tls.Config{ServerName: "other.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{p.clients["valid"]}})
		expectRefused(t, c, rc, err)
		// The new CA's works.
		nc, err := newCA.Client("new client")
		if err != nil {
			t.Fatal(err)
		}
		c, _, err = dialTLS(t, addr, &tls.Config{ServerName: "other.example.test", RootCAs: p.roots, Certificates: []tls.Certificate{nc}})
		if err != nil {
			t.Fatalf("new CA's certificate: %v", err)
		}
		c.Close()
		up.next(t)
	})
	up.expectNone(t)
}

// TestSNIGames tries names that might slip past routing: upper case, a
// trailing dot, a name that both an mtls exact host and a passthrough
// wildcard cover, and no SNI at all while unmatched names the mtls vhost.
// Without a certificate none may reach the mtls upstream, nor be passed
// through to the passthrough one.
func TestSNIGames(t *testing.T) {
	p := newPKI(t)
	mtlsUp := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	passUp := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("passthrough"))
	s := startServer(t, yamlf(`
listen: [{address: "127.0.0.1:0"}]
unmatched: app
vhosts:
  - name: app
    hosts: [APP.example.test, dot.example.test]
    mode: mtls
    tls: {certificates: [{cert: %q, key: %q}]}
    client_auth: {ca: %q}
    upstream: {address: %q}
  - name: pass
    hosts: ["*.example.test"]
    mode: passthrough
    upstream: {address: %q}
`, p.certFile, p.keyFile, p.caFile, mtlsUp.address(), passUp.address()))
	addr := s.addr(t, "127.0.0.1:0")

	for _, sni := range []string{"app.example.test", "APP.EXAMPLE.TEST", "App.Example.Test", ""} {
		for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(sni+"/"+tls.VersionName(version), func(t *testing.T) {
				cfg := &tls.Config{ServerName: sni, RootCAs: p.roots, MinVersion: version, MaxVersion: version}
				if sni == "" {
					cfg.InsecureSkipVerify = true // no name to verify; the server must still demand a certificate
				}
				c, rc, err := dialTLS(t, addr, cfg)
				expectRefused(t, c, rc, err)
			})
		}
	}
	t.Run("trailing dot", func(t *testing.T) {
		// Go's client strips a trailing dot, so send openssl's hello for
		// "Dot.Example.TEST.": it routes to the mtls vhost (crypto/tls then
		// refuses the name) and never to the passthrough wildcard.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(readHello(t, "openssl-tls13-trailing-dot.bin"))
		expectSilentClose(t, c)
	})
	t.Run("valid certificate, no SNI", func(t *testing.T) {
		c, _, err := dialTLS(t, addr, &tls.Config{RootCAs: p.roots, InsecureSkipVerify: true, Certificates: []tls.Certificate{p.clients["valid"]}})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		c.Write([]byte("PING\n"))
		c.CloseWrite()
		if b, _ := io.ReadAll(c); string(b) != "PONG" {
			t.Fatalf("got %q", b)
		}
		c.Close()
		mtlsUp.next(t)
	})
	mtlsUp.expectNone(t)
	passUp.expectNone(t)
	if got := s.count("127.0.0.1:0", "pass", OutcomeProxied); got != 0 {
		t.Fatalf("%v connections were passed through", got)
	}
}
