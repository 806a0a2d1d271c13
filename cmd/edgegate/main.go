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
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
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
  edgegate reload --config FILE  validate, then have the running gateway reload it
  edgegate upgrade --config FILE validate, then have the running gateway hand over to the installed binary
  edgegate cloudflare update --ips-v4 FILE --ips-v6 FILE --ca FILE [--dir DIR] [--reload CONFIG]
                                 install Cloudflare's ranges and origin-pull CA (validated)
  edgegate demo                  run a self-contained demo on loopback
  edgegate version               print the version
  edgegate help [COMMAND]        this list, or a command's usage (also: edgegate COMMAND --help)
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "reload", "upgrade":
		return cmdSignal(args[0], args[1:], stdout, stderr)
	case "cloudflare":
		return cmdCloudflare(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		if len(args) > 1 {
			fs := newFlagSet("version", stderr)
			if code, ok := parseFlags(fs, args[1:], stdout); !ok {
				return code
			}
			fmt.Fprintf(stderr, "edgegate version: unexpected argument %q\n", fs.Arg(0))
			return 2
		}
		fmt.Fprintf(stdout, "edgegate %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help":
		return cmdHelp(args[1:], stdout, stderr)
	case "-h", "-help", "--help":
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

// configFlag parses the --config flag shared by run, check, reload and
// upgrade. When ok is false the command ends with status code (0 after
// --help).
func configFlag(name string, args []string, stdout, stderr io.Writer) (path string, code int, ok bool) {
	fs := newFlagSet(name, stderr)
	p := fs.String("config", "/etc/edgegate/edgegate.yaml", "configuration file")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return "", code, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgegate %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", 2, false
	}
	return *p, 0, true
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	path, code, ok := configFlag("check", args, stdout, stderr)
	if !ok {
		return code
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// Compiling loads every certificate, key and CA the file names.
	if _, err := gateway.NewServer(cfg, discardLogger()); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// What run needs from this host: its addresses free (or held by the
	// running edgegate) and its interfaces present.
	notes, probeWarnings, err := gateway.Probe(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	gateway.WriteRoutes(stdout, cfg)
	for _, n := range notes {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	for _, w := range append(probeWarnings, gateway.Warnings(cfg)...) {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return 0
}

// notifyStop delivers SIGINT and SIGTERM to c.
func notifyStop(c chan os.Signal) { signal.Notify(c, syscall.SIGINT, syscall.SIGTERM) }

// discardLogger is a logger that writes nothing, for compiling a
// configuration only to validate it.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
