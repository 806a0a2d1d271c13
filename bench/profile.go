package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
)

// runGatewayChild runs edgegate's gateway package exactly as `edgegate run`
// does (same config loader, logger and server), in a process that writes a
// CPU profile until it is stopped. With --profile the harness runs edgegate
// this way, so profiles need no hook in the edgegate binary.
func runGatewayChild(configFile string) error {
	cfg, err := config.Load(configFile, nil)
	if err != nil {
		return err
	}
	log, err := gateway.NewLogger(os.Stderr, cfg.Log)
	if err != nil {
		return err
	}
	srv, err := gateway.NewServer(cfg, log)
	if err != nil {
		return err
	}
	stopProfile, err := startProfile()
	if err != nil {
		return err
	}
	defer stopProfile()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := srv.Start(); err != nil {
		return err
	}
	<-sigs
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	return nil
}

// startProfile starts a CPU profile into the file childProfileEnv names, if
// any, and returns the function that ends it.
func startProfile() (func(), error) {
	path := os.Getenv(childProfileEnv)
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// profileTop writes the top entries of a CPU profile next to it (NAME.top.txt)
// with `go tool pprof -top`, for the report and the closing note.
func profileTop(ctx context.Context, profile string) {
	if st, err := os.Stat(profile); err != nil || st.Size() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", profile).CombinedOutput()
	if err != nil {
		out = fmt.Appendf(out, "\ngo tool pprof: %v\n", err)
	}
	os.WriteFile(profile[:len(profile)-len(filepath.Ext(profile))]+".top.txt", out, 0o644)
}
