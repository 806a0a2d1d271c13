// Command edgegate is an edge gateway for TLS origins: it routes each
// connection by the SNI of its ClientHello, and per virtual host either
// passes the TLS stream through to an upstream or terminates it, requiring a
// client certificate (Cloudflare Authenticated Origin Pulls), and forwards
// the cleartext after a PROXY protocol header.
//
//	edgegate run --config FILE     run the gateway
//	edgegate check --config FILE   validate a configuration and print its routes
//	edgegate demo                  a self-contained demo on loopback
//	edgegate version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/edgegate/edgegate/gateway"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  edgegate run --config FILE     run the gateway (logs to stderr)
  edgegate check --config FILE   validate a configuration, print its routes
  edgegate demo                  run a self-contained demo on loopback
  edgegate version               print the version
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "edgegate %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "edgegate: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// configFlag parses the --config flag shared by run and check.
func configFlag(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/edgegate/edgegate.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgegate %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", false
	}
	return *path, true
}

func cmdRun(args []string, stderr io.Writer) int {
	path, ok := configFlag("run", args, stderr)
	if !ok {
		return 2
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log, err := gateway.NewLogger(stderr, cfg.Log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	srv, err := gateway.NewServer(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// Signals are caught before the listeners open: a stop that arrives as
	// soon as the gateway accepts must drain it, not kill the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := srv.Start(); err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	log.Info("edgegate running", "version", buildVersion(), "config", path, "listeners", len(cfg.Listen), "vhosts", len(cfg.VHosts))
	return serveUntilSignal(sigs, srv, path, cfg, log)
}

// serveUntilSignal reloads on SIGHUP and drains on SIGTERM or SIGINT.
func serveUntilSignal(sigs <-chan os.Signal, srv *gateway.Server, path string, cfg *gateway.Config, log *slog.Logger) int {
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			next, err := gateway.LoadConfig(path)
			if err != nil {
				log.Error("reload refused; keeping the running configuration", "err", err)
				continue
			}
			// Reload logs its own refusal; logging it here too wrote it twice.
			if srv.Reload(next) != nil {
				continue
			}
			cfg = next
			continue
		}
		log.Info("stopping: draining connections", "signal", sig.String(), "drain", cfg.Timeouts.Drain.D())
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeouts.Drain.D())
		err := srv.Shutdown(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			log.Warn("stopped after the drain timeout")
		} else {
			log.Info("stopped")
		}
		return 0
	}
	return 0
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	path, ok := configFlag("check", args, stderr)
	if !ok {
		return 2
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// Compiling loads every certificate, key and CA the file names.
	if _, err := gateway.NewServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	gateway.WriteRoutes(stdout, cfg)
	for _, w := range gateway.Warnings(cfg) {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return 0
}

// notifyStop delivers SIGINT and SIGTERM to c.
func notifyStop(c chan os.Signal) { signal.Notify(c, syscall.SIGINT, syscall.SIGTERM) }
