package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is a running gateway: its listeners, its current configuration and
// the connections in flight. Create one with NewServer, then Start it;
// Shutdown drains it. Reload swaps the configuration without dropping
// connections.
type Server struct {
	log     *slog.Logger
	metrics *metricsSet

	state atomic.Pointer[state]

	mu        sync.Mutex
	listeners map[string]*listener // by configured address
	conns     map[net.Conn]*session
	closing   bool
	wg        sync.WaitGroup // connection handlers
	acceptWG  sync.WaitGroup // accept loops
	http      *http.Server
	httpLn    net.Listener

	// guardMode says how the eBPF guard runs, for /healthz.
	guardMode atomic.Value
	// refusalLog bounds the log lines written for refused mtls connections.
	refusalLog rateLimit
	admission  admission
	guard      *guard // nil without the eBPF guard
	listen     func(addr string) (net.Listener, error)
	handOver   atomic.Bool // Shutdown is an upgrade's: keep the guard attached
}

// NewServer compiles cfg (loading every certificate and CA it names) into a
// server that is ready to Start. logger may be nil for the default logger.
func NewServer(cfg *config.Config, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.Default()
	}
	s := &Server{
		log:        logger,
		metrics:    newMetrics(),
		listeners:  map[string]*listener{},
		conns:      map[net.Conn]*session{},
		refusalLog: rateLimit{perSecond: 10, burst: 50},
		listen:     ListenTCP,
	}
	s.guardMode.Store("off")
	st, err := compile(cfg, 1, nil)
	if err != nil {
		return nil, err
	}
	for _, n := range cfg.Notes {
		logger.Warn(n)
	}
	s.state.Store(st)
	s.metrics.generation.Set(1)
	return s, nil
}

// Registry returns the Prometheus registry holding the server's metrics, so
// other parts of the process (the eBPF guard) can add theirs.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// Start opens every configured listener (and the metrics endpoint) and
// begins accepting. It fails, leaving nothing open, if any address cannot
// be bound.
func (s *Server) Start() error {
	st := s.state.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	opened := map[string]*listener{}
	for _, lc := range st.cfg.Listen {
		l, err := s.openListener(lc)
		if err != nil {
			for _, l := range opened {
				l.ln.Close()
			}
			return err
		}
		opened[lc.Address] = l
	}
	if err := s.startGuard(st.cfg); err != nil {
		for _, l := range opened {
			l.ln.Close()
		}
		return err
	}
	if addr := st.cfg.Metrics.Listen; addr != "" {
		// SO_REUSEPORT here too: during an upgrade both processes hold it.
		ln, err := ListenTCP(addr)
		if err != nil {
			for _, l := range opened {
				l.ln.Close()
			}
			return fmt.Errorf("metrics listen %s: %w", addr, err)
		}
		s.httpLn = ln
		s.http = &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
		go s.http.Serve(ln)
	}
	for addr, l := range opened {
		s.listeners[addr] = l
		s.serveListener(l)
	}
	return nil
}

// SetListenFunc replaces how listening sockets are opened (before Start):
// a zero-downtime upgrade hands the new process its predecessor's sockets
// this way. The default opens a TCP socket with SO_REUSEPORT.
func (s *Server) SetListenFunc(f func(addr string) (net.Listener, error)) { s.listen = f }

func (s *Server) openListener(lc config.Listener) (*listener, error) {
	ln, err := s.listen(lc.Address)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", lc.Address, err)
	}
	l := &listener{ln: ln, name: lc.Address}
	l.cfg.Store(&lc)
	return l, nil
}

func (s *Server) serveListener(l *listener) {
	s.acceptWG.Add(1)
	go func() {
		defer s.acceptWG.Done()
		s.acceptLoop(l)
	}()
}

// Addrs returns the bound address of each listener, keyed by the configured
// address (useful when a test listens on port 0).
func (s *Server) Addrs() map[string]net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]net.Addr{}
	for k, l := range s.listeners {
		m[k] = l.ln.Addr()
	}
	return m
}

// ListenerFiles returns a duplicate of each open listening socket, keyed by
// its configured address, for handing to a new process in an upgrade. The
// caller closes the files.
func (s *Server) ListenerFiles() (map[string]*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	files := map[string]*os.File{}
	for addr, l := range s.listeners {
		tl, ok := l.ln.(*net.TCPListener)
		if !ok {
			continue
		}
		f, err := tl.File()
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("listener %s: %w", addr, err)
		}
		files[addr] = f
	}
	return files, nil
}

// MetricsAddr returns the metrics endpoint's address, or nil.
func (s *Server) MetricsAddr() net.Addr {
	if s.httpLn == nil {
		return nil
	}
	return s.httpLn.Addr()
}

// SetGuardMode records how the eBPF guard runs ("off", "xdp-native", ...)
// for /healthz.
func (s *Server) SetGuardMode(mode string) { s.guardMode.Store(mode) }

// Generation returns the configuration generation in force (1 at start,
// +1 for each successful reload).
func (s *Server) Generation() uint64 { return s.state.Load().generation }

// Reload compiles cfg and, if it is valid and every file it names loads,
// makes it the configuration for new connections. Connections in flight
// keep the configuration they started with. Listeners the new configuration
// adds are opened, those it drops are closed, and unchanged ones stay open.
// On error nothing changes.
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
// that does not load is refused, logged and counted the same way.
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
	if cfg.Metrics.Listen != old.cfg.Metrics.Listen {
		return errors.New("metrics.listen cannot change on reload; restart edgegate")
	}
	if !reflect.DeepEqual(cfg.EBPF, old.cfg.EBPF) {
		return errors.New("ebpf settings cannot change on reload; restart edgegate")
	}
	want := map[string]config.Listener{}
	for _, lc := range cfg.Listen {
		want[lc.Address] = lc
	}
	var opened []*listener
	for addr, lc := range want {
		if _, ok := s.listeners[addr]; ok {
			continue
		}
		l, err := s.openListener(lc)
		if err != nil {
			for _, l := range opened {
				l.ln.Close()
			}
			return err
		}
		opened = append(opened, l)
	}
	s.state.Store(st)
	for addr, l := range s.listeners {
		if lc, ok := want[addr]; ok {
			l.cfg.Store(&lc)
			continue
		}
		l.ln.Close()
		delete(s.listeners, addr)
	}
	for _, l := range opened {
		s.listeners[l.name] = l
		s.serveListener(l)
	}
	if s.guard != nil {
		ports, _ := guardedPorts(cfg)
		if err := s.guard.g.SetPorts(ports); err != nil {
			s.log.Error("ebpf guard: updating guarded ports failed", "err", err)
		}
	}
	s.metrics.generation.Set(float64(st.generation))
	s.log.Info("configuration reloaded", "generation", st.generation, "listeners", len(s.listeners), "vhosts", len(st.vhosts))
	return nil
}

// track registers a connection so Shutdown can close it.
//
// A connection accepted while Shutdown closes the listeners is still
// tracked and served: Shutdown waits for the accept loops before it waits
// for connections, so every accepted client gets an answer and a count.
func (s *Server) track(c net.Conn, ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = ss
	s.wg.Add(1)
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// HandOver prepares a Shutdown that hands the service to a successor
// process (an upgrade): the metrics endpoint closes at once, so health
// checks reach the successor rather than a draining process, and the eBPF
// guard's attachment stays for the successor, which has taken it over.
func (s *Server) HandOver() {
	s.handOver.Store(true)
	s.mu.Lock()
	h := s.http
	s.mu.Unlock()
	if h != nil {
		h.Close()
	}
}

// Shutdown stops accepting, lets connections finish until ctx ends, then
// closes the rest. It returns ctx's error if connections had to be cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for _, l := range s.listeners {
		l.ln.Close()
	}
	s.mu.Unlock()
	s.acceptWG.Wait()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		n := len(s.conns)
		for c, ss := range s.conns {
			ss.cut.Store(true)
			c.Close()
		}
		s.mu.Unlock()
		if n > 0 {
			s.log.Warn("drain timeout: closed connections still open", "connections", n)
		}
		<-done
	}
	if s.http != nil {
		s.http.Close()
	}
	s.closeGuard()
	return err
}

// Close stops the server at once, closing every connection.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Shutdown(ctx)
	return nil
}

func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := len(s.listeners)
		closing := s.closing
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n == 0 || closing {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintf(w, "{\"listeners\":%d,\"generation\":%d,\"guard\":%q,\"draining\":%t}\n",
			n, s.Generation(), s.guardMode.Load().(string), closing)
	})
	return mux
}
