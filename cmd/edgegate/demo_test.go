package main_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func expectEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("the demo left %s behind in its temp folder", e.Name())
	}
}

// TestDemoCheck: `edgegate demo --check` makes the demo's requests with
// Go's client: passthrough and mtls with the demo client certificate get
// the upstreams' greetings, mtls without a certificate gets nothing.
func TestDemoCheck(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	cmd := exec.Command(edgegateBin, "demo", "--listen", "127.0.0.1:0", "--check")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(waitLimit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("edgegate demo --check did not exit\nstdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	}
	out := stdout.String()
	if err != nil {
		t.Fatalf("edgegate demo --check: %v\nstdout:\n%s\nstderr:\n%s", err, out, &stderr)
	}
	for _, want := range []string{
		"ok   passthrough www.demo.test:\n       hello from www: passthrough upstream (it terminated TLS itself)\n",
		"ok   mtls app.demo.test with the demo client certificate:\n       hello from app: mtls upstream (edgegate verified your client certificate)\n",
		`client certificate CN "demo origin-pull client"`,
		"ok   mtls app.demo.test without a client certificate: refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo --check output does not show %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAIL") {
		t.Errorf("demo --check reports a failure:\n%s", out)
	}
	// The gateway's own account: both good requests proxied, the other
	// refused, and nothing cut short when the demo stops.
	log := stderr.String()
	for _, want := range []string{
		"sni=www.demo.test vhost=www mode=passthrough outcome=proxied",
		"sni=app.demo.test vhost=app mode=mtls outcome=proxied",
		"sni=app.demo.test vhost=app mode=mtls outcome=closed_client_cert reason=no_certificate",
	} {
		if strings.Count(log, want) != 1 {
			t.Errorf("the demo's log does not have one line with %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "drain timeout") || strings.Contains(log, "closed_shutdown") {
		t.Errorf("the demo cut connections when it stopped:\n%s", log)
	}
	expectEmptyDir(t, tmp)
}

// curlResult is what one curl run produced.
type curlResult struct {
	stdout, stderr string
	code           int
}

// runCurl runs a command line printed by the demo with the real curl, with
// no ~/.curlrc and no proxy, showing response headers.
func runCurl(t *testing.T, curl, line string) curlResult {
	t.Helper()
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "curl" {
		t.Fatalf("not a curl command: %q", line)
	}
	args := append([]string{"-q", "-sS", "-i", "--noproxy", "*", "--max-time", "30"}, fields[1:]...)
	cmd := exec.Command(curl, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := curlResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run %s: %v", line, err)
	}
	return r
}

// TestDemoCurl runs `edgegate demo` as a user would, runs the curl
// commands it prints with the real curl, and stops it with Ctrl-C.
func TestDemoCurl(t *testing.T) {
	t.Parallel()
	curl := requireTool(t, "curl")
	tmp := t.TempDir()
	addr := freeAddr(t)
	p := startEdgegateEnv(t, []string{"TMPDIR=" + tmp}, "demo", "--listen", addr)
	p.stdout.waitFor(t, "its instructions", func(l string) bool { return l == "Press Ctrl-C to stop." })
	out := p.stdout.snapshot()
	if !strings.HasPrefix(out[0], "edgegate demo is listening on "+addr+" ") {
		t.Errorf("first line %q, want it to name %s", out[0], addr)
	}

	var cmds []string
	for _, l := range out {
		if c, ok := strings.CutPrefix(l, "  curl "); ok {
			cmds = append(cmds, "curl "+c)
		}
	}
	if len(cmds) != 5 {
		t.Fatalf("the demo printed %d curl commands, want 5:\n%s", len(cmds), strings.Join(out, "\n"))
	}
	var good, refused, mtlsRefused int
	for _, line := range cmds {
		r := runCurl(t, curl, line)
		var wantBody []string
		switch {
		case strings.Contains(line, "https://www.demo.test:"):
			wantBody = []string{"hello from www: passthrough upstream"}
		case strings.Contains(line, "https://app.demo.test:") && strings.Contains(line, "--cert "):
			wantBody = []string{"hello from app: mtls upstream", `client certificate CN "demo origin-pull client"`}
		}
		if wantBody != nil {
			good++
			if r.code != 0 || !strings.HasPrefix(r.stdout, "HTTP/1.1 200 ") {
				t.Errorf("%s\nexit %d, stderr %q, stdout:\n%s\nwant a 200 response", line, r.code, r.stderr, r.stdout)
				continue
			}
			for _, w := range wantBody {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("%s\nresponse does not say %q:\n%s", line, w, r.stdout)
				}
			}
			continue
		}
		// The refused ones (mtls without a certificate, plain HTTP, an
		// unknown name): no HTTP response and no TLS alert, just the end.
		refused++
		if strings.Contains(line, "https://app.demo.test:") {
			mtlsRefused++
		}
		if r.code == 0 || r.stdout != "" {
			t.Errorf("%s\nexit %d, stdout %q; want no response and a curl error", line, r.code, r.stdout)
		}
		if strings.Contains(strings.ToLower(r.stderr), "alert") {
			t.Errorf("%s\ncurl reports a TLS alert: %s", line, r.stderr)
		}
		t.Logf("%s\n  -> curl exit %d: %s", line, r.code, strings.TrimSpace(r.stderr))
	}
	if good != 2 || refused != 3 {
		t.Errorf("%d commands expected to work and %d to be refused; want 2 and 3", good, refused)
	}
	if mtlsRefused != 1 {
		t.Errorf("%d commands show mtls refused without a client certificate, want 1", mtlsRefused)
	}

	p.signal(t, syscall.SIGINT)
	if code := p.wait(t); code != 0 {
		t.Fatalf("demo exit status %d after Ctrl-C, want 0", code)
	}
	expectEmptyDir(t, tmp)
}
