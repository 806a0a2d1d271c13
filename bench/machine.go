package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Machine records where a run happened and with which versions.
type Machine struct {
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	Nginx    string `json:"nginx"`
	HAProxy  string `json:"haproxy"`
	OpenSSL  string `json:"openssl"`
	Edgegate string `json:"edgegate"`
	// Commit is the repository's HEAD when the run started, with
	// "+changes" when the work tree differed from it.
	Commit string `json:"commit"`
}

func machineFacts(ctx context.Context, bins map[string]string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	// NumCPU counts the CPUs this process may use, which pinning changed.
	if b, err := os.ReadFile("/sys/devices/system/cpu/online"); err == nil {
		m.Cores = countCPUs(strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Nginx = versionOf(ctx, "nginx", "-v")
	m.HAProxy = firstLine(versionOf(ctx, "haproxy", "-v"))
	m.OpenSSL = versionOf(ctx, "openssl", "version")
	if b, ok := bins[sysEdgegate]; ok {
		m.Edgegate = firstLine(versionOf(ctx, b, "version"))
	}
	m.Commit = "unknown (not a git checkout)"
	if root, err := moduleRoot(); err == nil {
		if out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
			m.Commit = strings.TrimSpace(string(out))
			if out, err := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(out) > 0 {
				m.Commit += "+changes"
			}
		}
	}
	return m
}

// countCPUs counts the CPUs in a list like "0-1" or "0,2-3".
func countCPUs(list string) int {
	n := 0
	for _, part := range strings.Split(list, ",") {
		lo, hi, ok := strings.Cut(part, "-")
		if !ok {
			n++
			continue
		}
		var a, b int
		for _, c := range lo {
			a = a*10 + int(c-'0')
		}
		for _, c := range hi {
			b = b*10 + int(c-'0')
		}
		n += b - a + 1
	}
	return n
}

func versionOf(ctx context.Context, bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "not available"
	}
	return strings.TrimSpace(string(out))
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
