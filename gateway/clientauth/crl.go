package clientauth

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// Revocations holds the certificates revoked by certificate revocation
// lists whose signatures were checked against the CAs that issued them. The
// zero value revokes nothing; build one with Add. It must not be changed
// after it is given to a Verifier.
type Revocations struct {
	// byIssuer maps the raw issuer name of the certificates a CRL covers
	// to the serial numbers it revokes, per signing key.
	byIssuer map[string][]revokedBy
	// lists are the CRLs added, for expiry warnings.
	lists []*x509.RevocationList
}

// revokedBy is what one CRL revokes: serial numbers of certificates issued
// by the CA whose key has keyID.
type revokedBy struct {
	keyID   []byte // the signing CA's SubjectKeyId (may be empty)
	serials map[string]struct{}
}

// ParseCRLs parses a CRL file: one DER CRL, or PEM holding one or more
// "X509 CRL" blocks (other PEM blocks are an error: a certificate given
// where a CRL belongs).
func ParseCRLs(data []byte) ([]*x509.RevocationList, error) {
	rest := bytes.TrimSpace(data)
	if len(rest) == 0 {
		return nil, errors.New("empty file, not a CRL")
	}
	if !bytes.HasPrefix(rest, []byte("-----BEGIN")) {
		l, err := x509.ParseRevocationList(data)
		if err != nil {
			return nil, fmt.Errorf("not a CRL (DER or PEM): %w", err)
		}
		return []*x509.RevocationList{l}, nil
	}
	var out []*x509.RevocationList
	for len(bytes.TrimSpace(rest)) > 0 {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			if bytes.Contains(rest, []byte("-----BEGIN")) {
				return nil, fmt.Errorf("PEM block %d does not decode", len(out)+1)
			}
			break // text after the last block, as openssl crl -text writes
		}
		if blk.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block %d is %q, not \"X509 CRL\"", len(out)+1, blk.Type)
		}
		l, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", len(out)+1, err)
		}
		out = append(out, l)
	}
	return out, nil
}

// Add checks that l is signed by one of cas, named as its issuer, and adds
// the certificates it revokes. A CRL signed by no CA in cas is refused:
// anyone can write a list, and one that cannot be checked is either a
// mistake (the CRL of another CA) or a forgery.
func (r *Revocations) Add(l *x509.RevocationList, cas []*x509.Certificate) error {
	var signer *x509.Certificate
	var tried []string
	for _, ca := range cas {
		if !bytes.Equal(l.RawIssuer, ca.RawSubject) {
			continue
		}
		if err := l.CheckSignatureFrom(ca); err != nil {
			tried = append(tried, err.Error())
			continue
		}
		signer = ca
		break
	}
	if signer == nil {
		msg := fmt.Sprintf("CRL issued by %q is signed by no CA of client_auth.ca", l.Issuer)
		if len(tried) > 0 {
			msg += fmt.Sprintf(" (a CA of that name is there, but: %s)", tried[0])
		}
		return errors.New(msg)
	}
	rb := revokedBy{keyID: signer.SubjectKeyId, serials: map[string]struct{}{}}
	for _, e := range l.RevokedCertificateEntries {
		rb.serials[e.SerialNumber.Text(16)] = struct{}{}
	}
	if r.byIssuer == nil {
		r.byIssuer = map[string][]revokedBy{}
	}
	r.byIssuer[string(l.RawIssuer)] = append(r.byIssuer[string(l.RawIssuer)], rb)
	r.lists = append(r.lists, l)
	return nil
}

// Revoked reports whether a CRL added to r revokes c: one issued by c's
// issuer (same name and, where both certificates say, the same key) that
// lists c's serial number.
func (r *Revocations) Revoked(c *x509.Certificate) bool {
	if r == nil {
		return false
	}
	sets := r.byIssuer[string(c.RawIssuer)]
	if len(sets) == 0 {
		return false
	}
	serial := c.SerialNumber.Text(16)
	for _, rb := range sets {
		if len(rb.keyID) > 0 && len(c.AuthorityKeyId) > 0 && !bytes.Equal(rb.keyID, c.AuthorityKeyId) {
			continue
		}
		if _, ok := rb.serials[serial]; ok {
			return true
		}
	}
	return false
}

// Expired returns the CRLs whose next update is before now: their CA has
// (or should have) published a newer one, whose revocations they lack.
func (r *Revocations) Expired(now time.Time) []*x509.RevocationList {
	if r == nil {
		return nil
	}
	var out []*x509.RevocationList
	for _, l := range r.lists {
		if !l.NextUpdate.IsZero() && l.NextUpdate.Before(now) {
			out = append(out, l)
		}
	}
	return out
}
