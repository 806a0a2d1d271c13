package gateway

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/edgegate/edgegate/gateway/config"
)

// Reload compiles cfg and, if it is valid, every file it names loads and
// every resource it needs can be had, makes it the configuration for new
// connections. Connections in flight keep the configuration they started
// with. Listeners the new configuration adds are opened, those it drops are
// closed, and unchanged ones stay open; the eBPF guard's ports, allow-list,
// fragment handling and blocklist rules, the metrics endpoint and the log's
// level and format follow the new configuration. Settings that need a
// restart are named in a warning (see RestartNeeded). On error nothing
// changes, guard included, and the refusal is logged and counted.
func (s *Server) Reload(cfg *config.Config) error {
	err := s.reload(cfg)
	if err != nil {
		s.metrics.reloads.WithLabelValues("error").Inc()
		s.log.Error("reload refused; keeping the running configuration", "err", err)
		return err
	}
	s.metrics.reloads.WithLabelValues("ok").Inc()
	return nil
}

// ReloadFile loads the configuration file at path and Reloads it. A file
// that does not load is refused, logged and counted the same way. When the
// file's cloudflare_data holds a broken set, the set in force is kept.
func (s *Server) ReloadFile(path string) error {
	cfg, err := config.Load(path, s.state.Load().cfg.Cloudflare)
	if err != nil {
		s.metrics.reloads.WithLabelValues("error").Inc()
		s.log.Error("reload refused; keeping the running configuration", "err", err)
		return err
	}
	return s.Reload(cfg)
}

// Config returns the configuration in force.
func (s *Server) Config() *config.Config { return s.state.Load().cfg }

func (s *Server) reload(cfg *config.Config) error {
	old := s.state.Load()
	st, err := compile(cfg, old.generation+1, old)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return errors.New("server is shutting down")
	}

	// Acquire what the new configuration adds; any failure gives it back.
	var a acquired
	for i, lc := range cfg.Listen {
		if _, ok := s.listeners[lc.Address]; ok {
			continue
		}
		l, err := s.openListener(cfg, i)
		if err != nil {
			a.release()
			return err
		}
		a.listeners = append(a.listeners, l)
	}
	if cfg.Metrics.Listen != "" && cfg.Metrics.Listen != old.cfg.Metrics.Listen {
		if a.metrics, err = openMetrics(cfg); err != nil {
			a.release()
			return err
		}
	}
	// The guard last: it is the one step that changes what is in force,
	// and it undoes itself when the kernel refuses.
	if err := s.updateGuard(cfg); err != nil {
		a.release()
		return err
	}

	// Commit; nothing below fails.
	st.pools.Start(old.pools, s.metrics.upstream, s.log)
	s.metrics.forState(st)
	s.state.Store(st)
	want := map[string]config.Listener{}
	for _, lc := range cfg.Listen {
		want[lc.Address] = lc
	}
	for addr, l := range s.listeners {
		if lc, ok := want[addr]; ok {
			l.cfg.Store(&lc)
			continue
		}
		l.close()
		delete(s.listeners, addr)
	}
	for _, l := range a.listeners {
		s.listeners[l.name] = l
		s.serveListener(l)
	}
	switch {
	case a.metrics != nil:
		s.serveMetrics(a.metrics)
	case cfg.Metrics.Listen == "" && s.http != nil:
		s.http.Close()
		s.http, s.httpLn = nil, nil
	}
	if !applyLog(s.log, cfg.Log) && cfg.Log != old.cfg.Log {
		s.log.Warn("log settings changed but this logger was not made by NewLogger; they apply after a restart")
	}
	for _, n := range cfg.Notes {
		s.log.Warn(n)
	}
	for _, r := range RestartNeeded(old.cfg, cfg) {
		s.log.Warn("setting changed but needs a restart to take effect; the running value stays", "setting", r)
	}
	s.metrics.generation.Set(float64(st.generation))
	s.log.Info("configuration reloaded", "generation", st.generation, "listeners", len(s.listeners), "vhosts", len(st.vhosts))
	return nil
}

// RestartNeeded names each setting that differs between the configuration
// in force and next and that a reload cannot apply: the eBPF guard's
// attachment (enabled, interfaces, mode, required, table size, pin path)
// and reuse_port on a listener that stays open. Everything else a reload
// applies.
func RestartNeeded(running, next *config.Config) []string {
	var out []string
	a, b := running.EBPF, next.EBPF
	for _, f := range []struct {
		name string
		same bool
	}{
		{"ebpf.enabled", a.Enabled == b.Enabled},
		{"ebpf.interfaces", reflect.DeepEqual(a.Interfaces, b.Interfaces)},
		{"ebpf.mode", a.Mode == b.Mode},
		{"ebpf.required", a.Required == b.Required},
		{"ebpf.flow_table_size", a.FlowTableSize == b.FlowTableSize},
		{"ebpf.pin_path", a.PinPath == b.PinPath},
	} {
		// A guard that is off before and after has nothing to restart.
		if !f.same && (a.Enabled || b.Enabled) {
			out = append(out, f.name)
		}
	}
	was := map[string]bool{}
	for _, lc := range running.Listen {
		was[lc.Address] = lc.ReusePort
	}
	for _, lc := range next.Listen {
		if reuse, ok := was[lc.Address]; ok && reuse != lc.ReusePort {
			out = append(out, fmt.Sprintf("listen %s reuse_port", lc.Address))
		}
	}
	return out
}
