package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/relay"
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
	conns     map[*session]struct{}
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
	guard      *guard        // nil without the eBPF guard
	parker     *relay.Parker // relays passthrough connections; set by Start
	listen     ListenFunc
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
		conns:      map[*session]struct{}{},
		refusalLog: rateLimit{perSecond: 10, burst: 50},
		listen:     Listen,
	}
	s.guardMode.Store("off")
	st, err := compile(cfg, 1, nil)
	if err != nil {
		return nil, err
	}
	for _, n := range cfg.Notes {
		logger.Warn(n)
	}
	s.metrics.forState(st)
	s.state.Store(st)
	s.metrics.generation.Set(1)
	s.metrics.reg.MustRegister(newChainCacheCollector(&s.state))
	return s, nil
}

// Registry returns the Prometheus registry holding the server's metrics, so
// other parts of the process (the eBPF guard) can add theirs.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// Start opens every configured listener, attaches the eBPF guard when the
// configuration asks for it, opens the metrics endpoint, and begins
// accepting. If any step fails, everything the earlier steps acquired is
// released (no listener open, no program attached) and the error says
// which step failed, as FILE:LINE for an address that cannot be bound.
func (s *Server) Start() error {
	st := s.state.Load()
	cfg := st.cfg
	s.mu.Lock()
	defer s.mu.Unlock()
	var a acquired
	if err := s.acquire(cfg, &a); err != nil {
		a.release()
		return err
	}
	// Nothing below fails: commit what was acquired.
	st.pools.Start(nil, s.metrics.upstream, s.log)
	s.parker = a.parker
	for _, l := range a.listeners {
		s.listeners[l.name] = l
		s.serveListener(l)
	}
	s.commitGuard(cfg, a.guard, a.guardErr)
	if a.metrics != nil {
		s.serveMetrics(a.metrics)
	}
	return nil
}

// acquired is what Start (or a reload) has opened and not yet committed;
// release gives all of it back, so every failure takes one path.
type acquired struct {
	parker    *relay.Parker
	listeners []*listener
	guard     *guard
	guardErr  error // the guard failed to attach and ebpf.required is false
	metrics   net.Listener
}

func (a *acquired) release() {
	if a.parker != nil {
		a.parker.Close()
	}
	for _, l := range a.listeners {
		l.close()
	}
	if a.guard != nil {
		a.guard.g.Close()
	}
	if a.metrics != nil {
		a.metrics.Close()
	}
}

// acquire opens what cfg asks for at start, in order: the relay's loops
// (one per core), the listeners, the guard, the metrics endpoint.
func (s *Server) acquire(cfg *config.Config, a *acquired) error {
	var err error
	if a.parker, err = relay.NewParker(runtime.GOMAXPROCS(0)); err != nil {
		return err
	}
	for i := range cfg.Listen {
		l, err := s.openListener(cfg, i)
		if err != nil {
			return err
		}
		a.listeners = append(a.listeners, l)
	}
	if a.guard, a.guardErr, err = s.openGuard(cfg); err != nil {
		return err
	}
	if cfg.Metrics.Listen != "" {
		if a.metrics, err = openMetrics(cfg); err != nil {
			return err
		}
	}
	return nil
}

// openMetrics opens the metrics endpoint's socket. SO_REUSEPORT: during an
// upgrade the old and the new process both hold it for a moment.
func openMetrics(cfg *config.Config) (net.Listener, error) {
	ln, err := listenTCP(cfg.Metrics.Listen, true, 0)
	if err != nil {
		return nil, cfg.ErrAt(fmt.Sprintf("metrics.listen %q: %v", cfg.Metrics.Listen, bindError(err)), "metrics", "listen")
	}
	return ln, nil
}

// serveMetrics serves /metrics and /healthz on ln, replacing the endpoint
// in force (a reload that moves metrics.listen). s.mu must be held.
func (s *Server) serveMetrics(ln net.Listener) {
	if s.http != nil {
		s.http.Close()
	}
	s.httpLn = ln
	s.http = &http.Server{Handler: s.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
	go s.http.Serve(ln)
}

// SetListenFunc replaces how listening sockets are opened (before Start):
// a zero-downtime upgrade hands the new process its predecessor's sockets
// this way. The default is Listen.
func (s *Server) SetListenFunc(f ListenFunc) { s.listen = f }

// openListener opens cfg's listener i; an address that cannot be bound is
// reported at its line.
func (s *Server) openListener(cfg *config.Config, i int) (*listener, error) {
	lc := cfg.Listen[i]
	ln, err := s.listen(lc)
	if err != nil {
		return nil, cfg.ErrAt(fmt.Sprintf("listen address %q: %v", lc.Address, bindError(err)), "listen", i, "address")
	}
	l := &listener{ln: ln, name: lc.Address}
	l.cfg.Store(&lc)
	return l, nil
}

// bindError is the part of a listen error an operator acts on ("bind:
// address already in use"), without the address it already names.
func bindError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

func (s *Server) serveListener(l *listener) {
	if tl, ok := l.ln.(*net.TCPListener); ok && l.polled == nil {
		l.polled = pollable(tl)
	}
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
	s.mu.Lock()
	defer s.mu.Unlock()
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

// track registers a connection so Shutdown can close it.
//
// A connection accepted while Shutdown closes the listeners is still
// tracked and served: Shutdown waits for the accept loops before it waits
// for connections, so every accepted client gets an answer and a count.
func (s *Server) track(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[ss] = struct{}{}
	s.wg.Add(1)
}

func (s *Server) untrack(ss *session) {
	s.mu.Lock()
	delete(s.conns, ss)
	s.mu.Unlock()
	s.wg.Done()
}

// setConn records the net.Conn a session's socket has become (the slow
// path), so that a drain deadline can close it; one cut already closes it.
func (s *Server) setConn(ss *session, c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.conn = c
	if ss.cut.Load() {
		c.Close()
	}
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
		l.close()
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
		for ss := range s.conns {
			ss.cut.Store(true)
			if ss.pair != nil {
				// The relay's loop owns a parked connection's sockets.
				ss.pair.Cut()
			} else if ss.conn != nil {
				ss.conn.Close()
			}
		}
		s.mu.Unlock()
		if n > 0 {
			s.log.Warn("drain timeout: closed connections still open", "connections", n)
		}
		<-done
	}
	s.mu.Lock()
	h, parker := s.http, s.parker
	s.mu.Unlock()
	if h != nil {
		h.Close()
	}
	if parker != nil {
		parker.Close()
	}
	s.closeGuard()
	s.state.Load().pools.Close()
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
