package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
)

// process is a running `edgegate run`: the gateway and everything around it
// that makes it a long-lived service (signals, control socket, file watch,
// pid file, systemd readiness, upgrades).
type process struct {
	path string
	cfg  *config.Config
	srv  *gateway.Server
	log  *slog.Logger
	out  *logOutput // the log's destinations: stderr and log.file

	requests  chan request  // from the control socket and the file watcher
	done      chan struct{} // closed when the process stops serving
	control   net.Listener
	stopWatch chan struct{} // closed to stop the file watcher; nil when none runs
}

// request asks the main loop to act; the answer goes back on reply.
type request struct {
	op    string // "reload" | "upgrade"
	reply chan answer
}

// answer is the main loop's answer to a request: an error, or success with
// notes for the operator (settings that need a restart).
type answer struct {
	notes []string
	err   error
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	path, code, ok := configFlag("run", args, stdout, stderr)
	if !ok {
		return code
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := startHeapFloor(); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	out := &logOutput{stderr: stderr}
	if err := out.setPath(cfg.Path(cfg.Log.File)); err != nil {
		fmt.Fprintln(stderr, cfg.ErrAt(fmt.Sprintf("log.file %q: %v", cfg.Log.File, err), "log", "file"))
		return 1
	}
	defer out.setPath("")
	log, err := gateway.NewLogger(out, cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	srv, err := gateway.NewServer(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	srv.Registry().MustRegister(gateway.BuildInfo(buildVersion()))
	p := &process{path: path, cfg: cfg, srv: srv, log: log, out: out, requests: make(chan request), done: make(chan struct{})}

	inherited, err := inheritedListeners()
	if err != nil {
		log.Error("upgrade: cannot use the inherited sockets", "err", err)
		return 1
	}
	// Taken now: opening the listeners consumes the inherited map.
	upgraded := len(inherited) > 0
	if len(inherited) > 0 {
		srv.SetListenFunc(func(lc config.Listener) (net.Listener, error) {
			if f, ok := inherited[lc.Address]; ok {
				delete(inherited, lc.Address)
				defer f.Close()
				return net.FileListener(f)
			}
			return gateway.Listen(lc)
		})
	}

	// Signals are caught before the listeners open: a stop that arrives as
	// soon as the gateway accepts must drain it, not kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	if err := srv.Start(); err != nil {
		// Like a configuration error: FILE:LINE: what, alone, where the
		// operator who just ran it looks.
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, f := range inherited {
		f.Close() // handed over for a listener this configuration dropped
	}
	if err := p.openControl(); err != nil {
		log.Error("control socket", "err", err)
		srv.Close()
		return 1
	}
	p.writePIDFile()
	if cfg.Watch {
		p.startWatch()
	}
	ready(log, upgraded)
	var bound []string
	for name, a := range srv.Addrs() {
		bound = append(bound, name+"="+a.String())
	}
	log.Info("edgegate running", "version", buildVersion(), "pid", os.Getpid(), "config", path,
		"listeners", bound, "vhosts", len(cfg.VHosts))
	return p.loop(sigs)
}

// loop serves until a stop signal or a finished upgrade, then drains.
func (p *process) loop(sigs <-chan os.Signal) int {
	for {
		var why string
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				p.reload()
				continue
			case syscall.SIGUSR1:
				p.reopenLog()
				continue
			case syscall.SIGUSR2:
				if err := p.upgrade(); err != nil {
					p.log.Error("upgrade failed; this process keeps serving", "err", err)
					continue
				}
				why = "upgraded"
			default:
				why = sig.String()
			}
		case r := <-p.requests:
			var a answer
			switch r.op {
			case "reload":
				a.notes, a.err = p.reload()
			case "upgrade":
				a.err = p.upgrade()
			}
			r.reply <- a
			if r.op != "upgrade" || a.err != nil {
				continue
			}
			why = "upgraded"
		}
		return p.stop(why)
	}
}

// reload reads the configuration file again and swaps it in; on any error
// the running configuration stays. Besides what the gateway applies, the
// process applies its own settings: pid_file, control_socket and watch. It
// returns the settings that need a restart.
func (p *process) reload() ([]string, error) {
	old := p.cfg
	if err := p.srv.ReloadFile(p.path); err != nil { // logs and counts a refusal
		return nil, err
	}
	p.cfg = p.srv.Config()
	if p.cfg.Path(p.cfg.PIDFile) != old.Path(old.PIDFile) {
		p.removePIDFile(old)
		p.writePIDFile()
	}
	if p.cfg.Path(p.cfg.ControlSocket) != old.Path(old.ControlSocket) {
		p.closeControl(old, false)
		if err := p.openControl(); err != nil {
			p.log.Error("control socket: the new control_socket cannot be opened; reload and upgrade need signals until it can", "err", err)
		}
	}
	if err := p.out.setPath(p.cfg.Path(p.cfg.Log.File)); err != nil {
		p.log.Error("log.file: the new file cannot be opened; the log goes on where it went", "err", err)
	}
	switch {
	case p.cfg.Watch && p.stopWatch == nil:
		p.startWatch()
	case !p.cfg.Watch && p.stopWatch != nil:
		close(p.stopWatch)
		p.stopWatch = nil
	}
	return gateway.RestartNeeded(old, p.cfg), nil
}

// reopenLog opens log.file again (SIGUSR1): logrotate has renamed it, and
// the log goes on in a new file under the configured name.
func (p *process) reopenLog() {
	if p.cfg.Log.File == "" {
		p.log.Info("SIGUSR1: no log.file to reopen")
		return
	}
	if err := p.out.reopen(); err != nil {
		p.log.Error("log.file cannot be reopened; the log goes on in the file it went to", "err", err)
		return
	}
	p.log.Info("log file reopened", "file", p.cfg.Path(p.cfg.Log.File))
}

// stop drains the gateway and cleans up what this process owns.
func (p *process) stop(why string) int {
	drain := p.cfg.Timeouts.Drain.D()
	p.log.Info("stopping: draining connections", "why", why, "drain", drain)
	close(p.done)
	p.closeControl(p.cfg, why == "upgraded")
	if why == "upgraded" {
		p.srv.HandOver()
	}
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	err := p.srv.Shutdown(ctx)
	cancel()
	if why != "upgraded" {
		p.removePIDFile(p.cfg)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		p.log.Warn("stopped after the drain timeout")
	} else {
		p.log.Info("stopped")
	}
	return 0
}

// ask hands a request to the main loop and waits for its answer; it
// returns errStopped if the process stops first.
func (p *process) ask(op string) ([]string, error) {
	r := request{op: op, reply: make(chan answer, 1)}
	select {
	case p.requests <- r:
		a := <-r.reply
		return a.notes, a.err
	case <-p.done:
		return nil, errStopped
	}
}

var errStopped = errors.New("edgegate is stopping")

func (p *process) writePIDFile() {
	f := p.cfg.Path(p.cfg.PIDFile)
	if f == "" {
		return
	}
	if err := writeFileAtomic(f, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		p.log.Error("pid file", "err", err)
	}
}

// removePIDFile removes cfg's pid file if it still names this process
// (after an upgrade it names the successor).
func (p *process) removePIDFile(cfg *config.Config) {
	f := cfg.Path(cfg.PIDFile)
	if f == "" {
		return
	}
	if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(f)
	}
}

// writeFileAtomic writes data to a temporary file beside path and renames it
// into place, so a reader never sees a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// startWatch starts the file watcher; closing p.stopWatch stops it.
func (p *process) startWatch() {
	p.stopWatch = make(chan struct{})
	go p.watch(p.stopWatch)
}

// watch reloads when a file the configuration names changes: it polls their
// size and modification time every second and waits until they have been
// still for two polls (an ACME client writes the certificate, then the key).
func (p *process) watch(stop <-chan struct{}) {
	type stamp struct {
		size int64
		mod  time.Time
	}
	snapshot := func() map[string]stamp {
		m := map[string]stamp{}
		for _, f := range p.srv.Config().Files() {
			if fi, err := os.Stat(f); err == nil {
				m[f] = stamp{fi.Size(), fi.ModTime()}
			} else {
				m[f] = stamp{-1, time.Time{}}
			}
		}
		return m
	}
	equal := func(a, b map[string]stamp) bool {
		if len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if b[k] != v {
				return false
			}
		}
		return true
	}
	applied := snapshot()
	last := applied
	for {
		select {
		case <-time.After(time.Second):
		case <-p.done:
			return
		case <-stop:
			return
		}
		now := snapshot()
		if !equal(now, applied) && equal(now, last) {
			p.log.Info("a configured file changed; reloading")
			if _, err := p.ask("reload"); errors.Is(err, errStopped) {
				return
			}
			// A failed reload is not retried until the files change again.
			applied = snapshot()
		}
		last = now
	}
}
