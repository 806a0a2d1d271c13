package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat. Linux
// fixes it at 100 on every architecture the harness runs on, and reading it
// from sysconf would need cgo.
const clockTicks = 100

// procTree returns root and every live descendant of root, found by walking
// the parent links in /proc. nginx runs a master and a worker, and a system
// under test may fork helpers: its cost is the cost of all of them.
func procTree(root int) []int {
	if root <= 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], pid)
	}
	tree := []int{root}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree
}

// procStat holds the fields of /proc/PID/stat the harness uses.
type procStat struct {
	ppid           int
	utime, stime   uint64
	cutime, cstime uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may itself contain spaces or
	// parentheses; every field after the last ')' is a plain number.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is the state (field 3); field N of proc(5) is f[N-3].
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	num := func(field int) uint64 {
		v, _ := strconv.ParseUint(f[field-3], 10, 64)
		return v
	}
	return procStat{
		ppid:   int(num(4)),
		utime:  num(14),
		stime:  num(15),
		cutime: num(16),
		cstime: num(17),
	}, nil
}

// cpuTicks returns the CPU time (user + system, in clock ticks) used so far
// by root and its live descendants, plus what root's reaped children used.
func cpuTicks(root int) uint64 {
	var total uint64
	for _, pid := range procTree(root) {
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		total += st.utime + st.stime
		if pid == root {
			total += st.cutime + st.cstime
		}
	}
	return total
}

// memoryKiB returns the proportional set size (Pss) of root's process tree
// in KiB, falling back to the resident set size where smaps_rollup is not
// readable. Pss splits pages shared by nginx's master and worker fairly
// instead of counting them twice.
func memoryKiB(root int) (pss, rss uint64) {
	for _, pid := range procTree(root) {
		p, okP := readKiBField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
		r, _ := readKiBField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
		if !okP {
			p = r
		}
		pss += p
		rss += r
	}
	return pss, rss
}

func readKiBField(path, key string) (uint64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, key) {
			continue
		}
		fields := strings.Fields(line[len(key):])
		if len(fields) == 0 {
			return 0, false
		}
		v, err := strconv.ParseUint(fields[0], 10, 64)
		return v, err == nil
	}
	return 0, false
}

// openFDs counts the file descriptors held by root's process tree.
func openFDs(root int) int {
	n := 0
	for _, pid := range procTree(root) {
		entries, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
		if err == nil {
			n += len(entries)
		}
	}
	return n
}

// cpuBusy returns the user, nice and system ticks that /proc/stat counts
// for one CPU. Interrupt and softirq time is left out: loopback traffic of
// the run itself is handled there, on whichever CPU.
func cpuBusy(cpu int) uint64 {
	f := cpuStat(cpu)
	if len(f) < 3 {
		return 0
	}
	return f[0] + f[1] + f[2]
}

// cpuAllBusy returns every tick /proc/stat counts for one CPU but idle and
// iowait: interrupt and softirq time included, where a veth's receive path
// runs (on the sending CPU).
func cpuAllBusy(cpu int) uint64 {
	var t uint64
	for i, v := range cpuStat(cpu) {
		// user nice system idle iowait irq softirq steal; guest time is
		// already in user.
		if i != 3 && i != 4 && i < 8 {
			t += v
		}
	}
	return t
}

// cpuStat returns the tick counters of one CPU's line in /proc/stat.
func cpuStat(cpu int) []uint64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	prefix := fmt.Sprintf("cpu%d ", cpu)
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		var out []uint64
		for _, s := range strings.Fields(line)[1:] {
			v, _ := strconv.ParseUint(s, 10, 64)
			out = append(out, v)
		}
		return out
	}
	return nil
}

// selfTicks is the CPU time of the harness process (load generator and
// upstreams) and of the children it has reaped: the flood's processes
// (floodInChild), which end within the repetition that runs them. The
// systems it started are reaped only after their measurements, so they do
// not count here while they are measured.
func selfTicks() uint64 {
	st, err := readStat(os.Getpid())
	if err != nil {
		return 0
	}
	return st.utime + st.stime + st.cutime + st.cstime
}

// interference samples how much CPU time processes other than the run's own
// took on the system's and the load generator's cores. A shared machine
// shows up here instead of silently skewing the figures.
// Without pinning the split between the cores means nothing, and the
// sampler reports zero.
type interference struct {
	pinned                   bool
	sys0, load0, sut0, self0 uint64
	at                       time.Time
}

func startInterference(sutPID int, pinned bool) interference {
	i := interference{pinned: pinned, sys0: cpuBusy(systemCPU), load0: cpuBusy(loadCPU), self0: selfTicks(), at: time.Now()}
	if sutPID != 0 {
		i.sut0 = cpuTicks(sutPID)
	}
	return i
}

// others returns the share of the system CPU and of the load CPU used by
// other processes since start.
func (i interference) others(sutPID int) (onSystem, onLoad float64) {
	el := time.Since(i.at).Seconds() * clockTicks
	if el <= 0 || !i.pinned {
		return 0, 0
	}
	var sut uint64
	if sutPID != 0 {
		sut = cpuTicks(sutPID) - i.sut0
	}
	sys := float64(cpuBusy(systemCPU)-i.sys0) - float64(sut)
	load := float64(cpuBusy(loadCPU)-i.load0) - float64(selfTicks()-i.self0)
	return max(sys, 0) / el, max(load, 0) / el
}
