package gateway

import (
	"fmt"
	"net/netip"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/relay"
	"github.com/edgegate/edgegate/gateway/upstream"
)

type mode string

const (
	modePassthrough mode = "passthrough"
	modeMTLS        mode = "mtls"
)

// vhost is a virtual host compiled for serving: everything a connection
// needs, loaded once per configuration generation.
type vhost struct {
	name          string
	mode          mode
	upstream      config.Upstream
	pool          *upstream.Pool // shared with the generations that keep its servers
	upstreamTLS   *upstream.TLS  // nil: cleartext to the upstream
	resetOnReject bool
	allow         []netip.Prefix  // empty: any source
	timeouts      config.Timeouts // the global ones with the vhost's own over them
	mtls          *mtlsHost       // mode mtls only
	metrics       *vhostMetrics   // set by the server before the state serves
	// upAddr is the upstream's address when it is one server named by a
	// literal IP and port, which the accept loop's fast path dials itself
	// (relay.DialStart); invalid otherwise (dialed through the pool).
	upAddr netip.AddrPort
}

// admits reports whether allow_from lets a client address in.
func (v *vhost) admits(a netip.Addr) bool {
	return len(v.allow) == 0 || containsAddr(v.allow, a)
}

// state is one configuration generation, compiled. Connections hold the
// state they were accepted under until they end.
type state struct {
	cfg        *config.Config
	generation uint64
	routes     *routes
	vhosts     map[string]*vhost
	pools      *upstream.Set // started when the state is put in force
}

// compile turns a validated configuration into a state, loading every file
// it names. prev is the state it will replace (nil at start): mtls vhosts
// whose trust is unchanged keep its verified-chain caches. It fails without
// side effects, and succeeds with none but that sharing.
func compile(cfg *config.Config, generation uint64, prev *state) (*state, error) {
	var prevPools *upstream.Set
	if prev != nil {
		prevPools = prev.pools
	}
	st := &state{
		pools:      upstream.NewSet(prevPools),
		cfg:        cfg,
		generation: generation,
		routes:     &routes{exact: map[string]*vhost{}, wildcard: map[string]*vhost{}},
		vhosts:     map[string]*vhost{},
	}
	for i := range cfg.VHosts {
		vc := &cfg.VHosts[i]
		v := &vhost{
			name:          vc.Name,
			mode:          mode(vc.Mode),
			upstream:      vc.Upstream,
			resetOnReject: vc.OnReject == "reset",
			allow:         vc.AllowFromPrefixes,
			timeouts:      cfg.Timeouts,
			pool:          st.pools.Add(vc.Name, vc.Upstream),
		}
		if vc.Timeouts != nil {
			v.timeouts = *vc.Timeouts
		}
		var err error
		if v.upstreamTLS, err = upstream.LoadTLS(cfg, i); err != nil {
			return nil, err
		}
		if servers := vc.Upstream.List(); len(servers) == 1 && v.upstreamTLS == nil {
			v.upAddr, _ = relay.Dialable(servers[0].Address)
		}
		if v.mode == modeMTLS {
			var before *mtlsHost
			if prev != nil {
				if pv := prev.vhosts[vc.Name]; pv != nil {
					before = pv.mtls
				}
			}
			m, err := newMTLSHost(cfg, i, before)
			if err != nil {
				return nil, err
			}
			v.mtls = m
		}
		for _, h := range vc.Hosts {
			pat, err := config.HostPattern(h)
			if err != nil {
				return nil, fmt.Errorf("vhost %q: %w", vc.Name, err)
			}
			st.routes.add(pat, v)
		}
		st.vhosts[v.name] = v
	}
	switch cfg.Unmatched {
	case "close":
	case "reset":
		st.routes.unmatchedReset = true
	default:
		st.routes.unmatched = st.vhosts[cfg.Unmatched]
	}
	return st, nil
}
