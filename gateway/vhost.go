package gateway

import (
	"fmt"
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
	upstream      Upstream
	resetOnReject bool
	mtls          *mtlsHost // mode mtls only
}

// state is one configuration generation, compiled. Connections hold the
// state they were accepted under until they end.
type state struct {
	cfg        *Config
	generation uint64
	routes     *routes
	vhosts     map[string]*vhost
}

// compile turns a validated configuration into a state, loading every file
// it names. It fails without side effects.
func compile(cfg *Config, generation uint64) (*state, error) {
	st := &state{
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
		}
		if v.mode == modeMTLS {
			m, err := newMTLSHost(cfg, i, generation)
			if err != nil {
				return nil, err
			}
			v.mtls = m
		}
		for _, h := range vc.Hosts {
			pat, err := hostPattern(h)
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
