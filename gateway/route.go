package gateway

import "strings"

// routes maps normalised server names to vhosts: exact names first, then
// one-label wildcards ("*.example.com" matches "a.example.com" only).
type routes struct {
	exact     map[string]*vhost
	wildcard  map[string]*vhost // key: parent name, without "*."
	unmatched *vhost            // nil: close or reset, per unmatchedReset
	// unmatchedReset closes unmatched connections with RST instead of FIN.
	unmatchedReset bool
}

// lookup returns the vhost for a normalised server name ("" for no SNI):
// the exact name, else the one-label wildcard, else the unmatched vhost
// (nil when unmatched connections are closed).
func (r *routes) lookup(name string) *vhost {
	if name != "" {
		if v := r.exact[name]; v != nil {
			return v
		}
		if _, parent, ok := strings.Cut(name, "."); ok {
			if v := r.wildcard[parent]; v != nil {
				return v
			}
		}
	}
	return r.unmatched
}

// add registers a vhost under a pattern from hostPattern.
func (r *routes) add(pattern string, v *vhost) {
	if parent, ok := strings.CutPrefix(pattern, "*."); ok {
		r.wildcard[parent] = v
		return
	}
	r.exact[pattern] = v
}
