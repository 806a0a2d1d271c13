package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
)

// TLS is TLS from edgegate to a vhost's upstream servers (upstream.tls),
// loaded for one configuration generation: its files are read again at
// every reload, so a renewed CA or client certificate takes effect.
type TLS struct {
	byServer map[string]*tls.Config // by server address
}

// LoadTLS reads the files of vhost i's upstream.tls; it returns nil when
// the vhost has none. Errors are FILE:LINE of the key at fault.
func LoadTLS(cfg *config.Config, i int) (*TLS, error) {
	vc := &cfg.VHosts[i]
	t := vc.Upstream.TLS
	if t == nil {
		return nil, nil
	}
	at := func(err error, key string) error {
		return cfg.ErrAt(fmt.Sprintf("vhost %q: upstream.tls.%s: %v", vc.Name, key, err), "vhosts", i, "upstream", "tls", key)
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Resumption spares the upstream a full handshake per connection.
		ClientSessionCache: tls.NewLRUClientSessionCache(256),
	}
	if t.CA == "system" {
		roots, err := x509.SystemCertPool()
		if err != nil {
			return nil, at(err, "ca")
		}
		base.RootCAs = roots
	} else {
		pem, err := os.ReadFile(cfg.Path(t.CA))
		if err != nil {
			return nil, at(err, "ca")
		}
		base.RootCAs = x509.NewCertPool()
		if !base.RootCAs.AppendCertsFromPEM(pem) {
			return nil, at(fmt.Errorf("%s holds no PEM certificate", t.CA), "ca")
		}
	}
	if t.Certificate != "" {
		c, err := tls.LoadX509KeyPair(cfg.Path(t.Certificate), cfg.Path(t.Key))
		if err != nil {
			return nil, at(fmt.Errorf("certificate %s, key %s: %w", t.Certificate, t.Key, err), "certificate")
		}
		base.Certificates = []tls.Certificate{c}
	}
	out := &TLS{byServer: map[string]*tls.Config{}}
	for _, s := range vc.Upstream.List() {
		c := base.Clone()
		c.ServerName = t.ServerName
		if c.ServerName == "" {
			c.ServerName, _, _ = net.SplitHostPort(s.Address)
			c.ServerName = strings.Trim(c.ServerName, "[]")
		}
		out.byServer[s.Address] = c
	}
	return out, nil
}

// Handshake makes c, a connection just dialled to server s, ready for the
// client's cleartext. Without TLS (t nil) it returns c and hdr as they are,
// for the caller to send hdr with the client's first bytes. With TLS it
// sends hdr (the PROXY header, which the upstream reads before its TLS
// handshake) in cleartext, runs the handshake within timeout and returns
// the TLS connection and no header; on failure it closes c and counts the
// failure on s.
func (t *TLS) Handshake(c net.Conn, s *Server, hdr []byte, timeout time.Duration) (net.Conn, []byte, error) {
	if t == nil {
		return c, hdr, nil
	}
	fail := func(err error) (net.Conn, []byte, error) {
		c.Close()
		s.m.tlsFailures.Inc()
		return nil, nil, fmt.Errorf("upstream %s: %w", s.address, err)
	}
	if len(hdr) > 0 {
		c.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := c.Write(hdr); err != nil {
			return fail(fmt.Errorf("send PROXY header before TLS: %w", err))
		}
		c.SetWriteDeadline(time.Time{})
	}
	tc := tls.Client(c, t.byServer[s.address])
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(fmt.Errorf("handshake: %w", err))
	}
	return tc, nil, nil
}
