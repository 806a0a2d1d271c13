package gateway

// Outcome names the way a connection ended. Every connection gets exactly
// one, in its log line and in edgegate_connections_total.
type Outcome string

// The outcomes. Operators alert and troubleshoot by these names; they are
// part of edgegate's interface and do not change.
const (
	OutcomeProxied             Outcome = "proxied"            // reached its upstream and ended normally
	OutcomeUnknownSNI          Outcome = "closed_unknown_sni" // SNI matches no vhost and unmatched is close/reset
	OutcomeNoSNI               Outcome = "closed_no_sni"      // no usable SNI and unmatched is close/reset
	OutcomeNotTLS              Outcome = "closed_not_tls"     // first bytes are not a TLS handshake (HTTP, SSH, scanners)
	OutcomeBadHello            Outcome = "closed_bad_hello"   // TLS, but not a well-formed ClientHello
	OutcomeHelloTooLarge       Outcome = "closed_hello_too_large"
	OutcomeHelloTimeout        Outcome = "closed_hello_timeout" // no complete ClientHello before timeouts.client_hello
	OutcomeClosedEarly         Outcome = "closed_early"         // the client left before sending a whole ClientHello
	OutcomeUntrustedProxy      Outcome = "closed_untrusted_proxy"
	OutcomeBadProxyHeader      Outcome = "closed_bad_proxy_header"
	OutcomeUpstreamUnreachable Outcome = "upstream_unreachable" // every server tried refused or timed out, or none is up; the client was closed silently
	OutcomeUpstreamError       Outcome = "upstream_error"       // writing the PROXY header or the hello to the upstream failed, or the TLS handshake with it (upstream.tls)
	OutcomeUpstreamClosed      Outcome = "upstream_closed"      // the upstream closed or reset before sending a byte back (often: it does not expect the PROXY header)
	OutcomeNotAllowed          Outcome = "closed_not_allowed"   // source address outside allow_from (either mode)
	OutcomeClientCert          Outcome = "closed_client_cert"   // mtls: no valid client certificate (reason says which check failed)
	OutcomeHandshake           Outcome = "closed_handshake"     // mtls: the TLS handshake failed or timed out
	OutcomeIdleTimeout         Outcome = "closed_idle"          // proxied, then silent for timeouts.idle
	OutcomeShutdown            Outcome = "closed_shutdown"      // cut at the end of the drain on stop
	OutcomeLimit               Outcome = "closed_limit"         // limits.max_connections reached; closed at accept
	OutcomeSourceLimit         Outcome = "closed_source_limit"  // limits.per_source reached for this address; closed at accept
	OutcomeSourceRate          Outcome = "closed_source_rate"   // limits.rate exceeded by this address (IPv6: its /64); closed at accept
)

// junk reports whether an outcome is the expected noise of an open port
// (scanners, probes): logged at debug level, not info.
func (o Outcome) junk() bool {
	switch o {
	case OutcomeUnknownSNI, OutcomeNoSNI, OutcomeNotTLS, OutcomeBadHello, OutcomeHelloTooLarge,
		OutcomeHelloTimeout, OutcomeClosedEarly, OutcomeUntrustedProxy, OutcomeBadProxyHeader,
		OutcomeLimit, OutcomeSourceLimit, OutcomeSourceRate:
		return true
	}
	return false
}
