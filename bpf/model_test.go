package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// model is a reference implementation, in Go, of the rules guard.c
// applies to TCP and UDP packets to and around one guarded port, flow table
// included: the slots, where the keyed hash puts each flow, and what a
// slot holds. The fuzz test runs the same packets through the kernel and
// through the model and requires the same verdict and the same slots.
type model struct {
	blocked map[netip.Addr]bool
	slots   map[uint32]uint64 // slots in use, by index
	hashKey guardFlowHashKey
	nslots  uint32
}

// Slot layout, as in guard.c.
const (
	slotCheckedShift = 32
	slotLenHiMax     = 1 << 36
	slotRefused      = 1 << 37
	slotUsed         = 1 << 38
	slotTagShift     = 39
	slotTagBits      = 25
	slotIDMask       = 0xffff_ffc0_0000_0000 // tag and in-use bit
	flowHashMix      = 0xbf58476d1ce4e5b9
)

// modelFlow is a slot's state unpacked.
type modelFlow struct {
	next     uint32
	checked  int
	lenHiMax bool
}

func (st modelFlow) pack(id uint64) uint64 {
	v := id | uint64(st.next) | uint64(st.checked)<<slotCheckedShift
	if st.lenHiMax {
		v |= slotLenHiMax
	}
	return v
}

func unpackSlot(v uint64) modelFlow {
	return modelFlow{next: uint32(v), checked: int(v>>slotCheckedShift) & 0xf, lenHiMax: v&slotLenHiMax != 0}
}

// newModel models g's flow table, which must be empty.
func newModel(t testing.TB, g *Guard) *model {
	t.Helper()
	m := &model{blocked: map[netip.Addr]bool{}, slots: map[uint32]uint64{}, nslots: g.objs.FlowSlots.MaxEntries()}
	if err := g.objs.FlowHashKey.Lookup(uint32(0), &m.hashKey); err != nil {
		t.Fatal(err)
	}
	return m
}

// flowKeyBytes lays out guard.c's struct flow_key for a client's segment.
func flowKeyBytes(src, dst netip.Addr, sport, dport uint16) [40]byte {
	var k [40]byte
	s, d := src.Unmap().As16(), dst.Unmap().As16()
	copy(k[0:], s[:])
	copy(k[16:], d[:])
	binary.BigEndian.PutUint16(k[32:], sport)
	binary.BigEndian.PutUint16(k[34:], dport)
	k[36] = 6
	if src.Is4() {
		k[36] = 4
	}
	return k
}

// flowHash is guard.c's flow_hash: NH over pairs of little-endian words
// (the BPF target's order), for IPv4 only the words that vary, then a
// multiply-xorshift round.
func flowHash(k [40]byte, hk guardFlowHashKey) uint64 {
	word := func(i int) uint32 { return binary.LittleEndian.Uint32(k[4*i:]) }
	var h uint64
	if k[36] == 4 {
		for j, pair := range [][2]int{{3, 7}, {8, 9}} {
			h += uint64(word(pair[0])+hk.K[2*j]) * uint64(word(pair[1])+hk.K[2*j+1])
		}
	} else {
		for i := 0; i+1 < len(hk.K); i += 2 {
			h += uint64(word(i)+hk.K[i]) * uint64(word(i+1)+hk.K[i+1])
		}
	}
	h ^= h >> 31
	h *= flowHashMix
	h ^= h >> 29
	return h
}

// slotOf returns a flow's slot index and the bits that mark the slot as
// the flow's, as guard.c's flow_slot.
func slotOf(hk guardFlowHashKey, nslots uint32, src, dst netip.Addr, sport, dport uint16) (uint32, uint64) {
	h := flowHash(flowKeyBytes(src, dst, sport, dport), hk)
	idx := uint32(((h >> 32) * uint64(nslots)) >> 32)
	return idx, slotUsed | (h&(1<<slotTagBits-1))<<slotTagShift
}

// TestFlowHashSpreads checks that the flow hash spreads streams over the
// slots as well as chance does, for the shapes of traffic a gateway sees:
// one client's ports in sequence, clients from one subnet on one port,
// random ones, over IPv4 and IPv6. A hash whose high bits follow its
// input (a product without the final mix) puts a client's sequential
// ports into a handful of slots.
func TestFlowHashSpreads(t *testing.T) {
	const nslots, streams, keys = 262144, 20000, 20
	// The share of streams that land in a slot already taken, by chance.
	chance := 1 - float64(nslots)*(1-math.Pow(1-1.0/nslots, streams))/streams
	rnd := rand.New(rand.NewPCG(7, 8))
	shapes := map[string]func(i int) (netip.Addr, netip.Addr, uint16){
		"one client, ports in sequence": func(i int) (netip.Addr, netip.Addr, uint16) {
			return client4, server4, uint16(32768 + i)
		},
		"a subnet, one port": func(i int) (netip.Addr, netip.Addr, uint16) {
			return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), server4, 40000
		},
		"random ipv4": func(int) (netip.Addr, netip.Addr, uint16) {
			return netip.AddrFrom4([4]byte{byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32())}), server4, uint16(rnd.Uint32())
		},
		"one ipv6 client, ports in sequence": func(i int) (netip.Addr, netip.Addr, uint16) {
			return client6, server6, uint16(32768 + i)
		},
		"an ipv6 /64, one port": func(i int) (netip.Addr, netip.Addr, uint16) {
			a := client6.As16()
			binary.BigEndian.PutUint32(a[12:], uint32(i))
			return netip.AddrFrom16(a), server6, 40000
		},
	}
	for name, shape := range shapes {
		worst := 0.0
		for range keys {
			var hk guardFlowHashKey
			for i := range hk.K {
				hk.K[i] = rnd.Uint32()
			}
			taken := map[uint32]bool{}
			collided := 0
			for i := range streams {
				src, dst, sport := shape(i)
				idx, _ := slotOf(hk, nslots, src, dst, sport, guarded)
				if taken[idx] {
					collided++
				}
				taken[idx] = true
			}
			worst = max(worst, float64(collided)/streams)
		}
		if worst > 1.5*chance {
			t.Errorf("%s: up to %.1f%% of streams share a slot, chance is %.1f%%", name, 100*worst, 100*chance)
		}
	}
}

func (m *model) set(idx uint32, v uint64) {
	if v == 0 {
		delete(m.slots, idx)
	} else {
		m.slots[idx] = v
	}
}

func (m *model) judge(p pkt) string {
	if p.dport != guarded {
		return "pass_not_guarded"
	}
	if m.blocked[p.src] {
		return "drop_blocked"
	}
	if p.proto != 0 && p.proto != protoTCP {
		return "drop_non_tcp"
	}
	syn, ack, fin, rst := p.flags&tcpSYN != 0, p.flags&tcpACK != 0, p.flags&tcpFIN != 0, p.flags&tcpRST != 0
	if syn && (fin || rst) || !syn && !ack && !rst {
		return "drop_bad_flags"
	}
	idx, id := slotOf(m.hashKey, m.nslots, p.src, p.dst, p.sport, p.dport)
	cur := m.slots[idx]
	if syn && !ack {
		st := modelFlow{next: p.seq + 1}
		v := "pass_syn"
		if len(p.payload) > 0 {
			next, ok := st.check(p.payload)
			if !ok {
				return "drop_not_tls" // slot untouched
			}
			st, v = next, "pass_tls"
		}
		if st.checked < 9 {
			m.set(idx, st.pack(id))
		} else if cur&slotIDMask == id {
			m.set(idx, 0)
		}
		return v
	}
	if cur&slotIDMask != id {
		return "pass_untracked"
	}
	st := unpackSlot(cur)
	skip := int32(st.next - p.seq)
	atNext := len(p.payload) > 0 && skip >= 0 && int(skip) < len(p.payload)
	if cur&slotRefused != 0 {
		if !atNext {
			return "drop_refused"
		}
		return "drop_not_tls"
	}
	if len(p.payload) == 0 {
		return "pass_no_payload"
	}
	if !atNext {
		return "pass_other_seq"
	}
	next, ok := st.check(p.payload[skip:])
	if !ok {
		m.set(idx, cur|slotRefused)
		return "drop_not_tls"
	}
	if next.checked >= 9 {
		m.set(idx, 0)
	} else {
		m.set(idx, next.pack(id))
	}
	return "pass_tls"
}

// check judges the bytes b at the flow's first unchecked position and
// returns the advanced state.
func (st modelFlow) check(b []byte) (modelFlow, bool) {
	next := st
	n := min(len(b), 9-st.checked)
	for i := range n {
		pos := st.checked + i
		v := b[i]
		ok := true
		switch pos {
		case 0:
			ok = v == 0x16
		case 1:
			ok = v == 0x03
		case 2:
			ok = v <= 4
		case 3:
			next.lenHiMax = v == 0x40
			ok = v <= 0x40
		case 4:
			ok = !next.lenHiMax || v == 0
		case 5:
			ok = v == 0x01
		}
		if !ok {
			return st, false
		}
	}
	next.checked += n
	next.next += uint32(n)
	return next, true
}

// tlsish maps fuzz byte b to a byte for stream position pos: usually the
// value a ClientHello has there (or a boundary value), sometimes b itself,
// so random inputs reach every check.
func tlsish(pos int, b byte) byte {
	if b >= 0xc0 {
		return b
	}
	switch pos {
	case 0:
		return 0x16
	case 1:
		return 0x03
	case 2:
		return b % 6 // 5 is the first version too new
	case 3:
		return b % 0x42 // 0x41 is the first too-long value
	case 5:
		return 0x01
	}
	return b
}

// opReader hands out fuzz input bytes, then zeros.
type opReader struct{ b []byte }

func (r *opReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// runModelOps decodes data into packets on two flows (IPv4 and IPv6,
// ISNs from the input), runs each through the kernel (XDP or TC, chosen
// by the input) and through the model, and fails on a different verdict.
func runModelOps(t testing.TB, g *Guard, data []byte) {
	resetState(t, g)
	m := newModel(t, g)
	r := &opReader{data}
	var isn [2]uint32
	for i := range isn {
		isn[i] = binary.BigEndian.Uint32([]byte{r.byte(), r.byte(), r.byte(), r.byte()})
	}
	flows := [2]flow{
		{src: client4, dst: server4, sport: 41000, dport: guarded, isn: isn[0]},
		{src: client6, dst: server6, sport: 41001, dport: guarded, isn: isn[1]},
	}
	for op := 0; len(r.b) > 0 && op < 64; op++ {
		o := r.byte()
		fi := int(o>>3) & 1
		f := flows[fi]
		ep := entryPoints[o>>7]
		var p pkt
		switch o & 7 {
		case 0:
			p = f.syn()
			p.flags |= r.byte() & (tcpFIN | tcpRST | tcpACK | tcpPSH | tcpECE | tcpCWR)
		case 1, 2, 3:
			off := int(int8(r.byte())) / 4
			n := int(r.byte() % 14)
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = tlsish(off+i, r.byte())
			}
			p = f.data(off, payload)
			if o&7 == 3 {
				p.flags = r.byte()
			}
		case 4:
			n := int(r.byte()%12) + 1
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = tlsish(i, r.byte())
			}
			p = f.synData(payload)
		case 5:
			p = f.ack()
			if b := r.byte(); b&1 != 0 {
				p.proto = protoUDP
			} else if b&2 != 0 {
				p.dport = notGuarded
			}
		case 6:
			if r.byte()&1 != 0 {
				if err := g.Block(f.src, time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
				m.blocked[f.src] = true
			} else {
				if err := g.Unblock(f.src); err != nil {
					t.Fatal(err)
				}
				delete(m.blocked, f.src)
			}
			continue
		case 7:
			p = f.data(0, nil)
			p.flags = r.byte()
		}
		want := m.judge(p)
		if got := judge(t, g, ep, p.bytes()); got != want {
			t.Fatalf("op %d (%s, flow %d, seq isn%+d, flags %#02x, payload % x): kernel %s, model %s",
				op, ep.name, fi, int32(p.seq-f.isn), p.flags, p.payload, got, want)
		}
		if got, want := kernelSlots(t, g), m.slots; !maps.Equal(got, want) {
			t.Fatalf("op %d (%s, flow %d, seq isn%+d, flags %#02x, payload % x): kernel slots %s, model slots %s",
				op, ep.name, fi, int32(p.seq-f.isn), p.flags, p.payload, fmtSlots(got), fmtSlots(want))
		}
	}
}

// kernelSlots returns the flow table's slots in use, by index.
func kernelSlots(t testing.TB, g *Guard) map[uint32]uint64 {
	t.Helper()
	n := int(g.objs.FlowSlots.MaxEntries())
	keys := make([]uint32, n)
	vals := make([]uint64, n)
	var cursor ebpf.MapBatchCursor
	got, err := g.objs.FlowSlots.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatal(err)
	}
	out := map[uint32]uint64{}
	for i := range got {
		if vals[i] != 0 {
			out[keys[i]] = vals[i]
		}
	}
	return out
}

func fmtSlots(slots map[uint32]uint64) string {
	s := "{"
	for idx, v := range slots {
		st := unpackSlot(v)
		s += fmt.Sprintf(" %d: tag %#x next %d checked %d len-hi-max %v refused %v;", idx, v>>slotTagShift,
			st.next, st.checked, st.lenHiMax, v&slotRefused != 0)
	}
	return s + " }"
}

func FuzzVerdicts(f *testing.F) {
	for _, seed := range [][]byte{
		{0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe, 0, 0, 1, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 36, 5, 1, 1, 1, 1, 1},
		{1, 2, 3, 4, 5, 6, 7, 8, 8, 0, 4, 5, 0x16, 3, 1, 0, 0x20, 2, 0, 2, 0x10, 9, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5},
		{0, 0, 0, 0, 0, 0, 0, 0, 6, 1, 0, 0, 5, 1, 14, 0, 6, 0, 0, 0, 7, 0},
		{9, 9, 9, 9, 9, 9, 9, 9, 0x80, 0, 0x81, 0, 1, 0xff, 0x82, 1, 1, 0x40, 3, 2, 3, 0x40, 0x41},
	} {
		f.Add(seed)
	}
	g := openTestGuard(f, Config{Ports: []uint16{guarded}})
	f.Fuzz(func(t *testing.T, data []byte) {
		runModelOps(t, g, data)
	})
}

// TestModelRandom runs a few thousand pseudo-random op sequences through
// the kernel and the model on every test run, not only under -fuzz.
func TestModelRandom(t *testing.T) {
	g := openTestGuard(t, Config{Ports: []uint16{guarded}})
	rnd := rand.New(rand.NewPCG(4, 443))
	n := 400
	if testing.Short() {
		n = 50
	}
	for range n {
		data := make([]byte, 8+rnd.IntN(120))
		for i := range data {
			data[i] = byte(rnd.UintN(256))
		}
		func() {
			defer func() {
				if t.Failed() {
					t.Logf("input: % x", data)
				}
			}()
			runModelOps(t, g, data)
		}()
	}
	// The generator must reach every rule, or agreement proves little.
	c, err := g.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"pass_not_guarded", "pass_syn", "pass_tls", "pass_no_payload", "pass_other_seq",
		"pass_untracked", "drop_not_tls", "drop_non_tcp", "drop_bad_flags", "drop_blocked", "drop_refused"} {
		if c[v] == 0 {
			t.Errorf("random ops never produced %s (counters %v)", v, c)
		}
	}
	t.Logf("verdicts over %d sequences: %v", n, c)
}

// FuzzFrames feeds arbitrary frames to both entry points, each from an
// empty flow table: exactly one counter must move (judge checks that) and
// XDP and TC must agree.
func FuzzFrames(f *testing.F) {
	hello := clientHello(f)
	fl := newFlow(client6, server6, 43000)
	fl.ext = []extHdr{{protoHopOpts, []byte{1, 4, 0, 0, 0, 0}}, {protoFragment, nil}}
	for _, p := range []pkt{
		newFlow(client4, server4, 43001).synData(hello[:20]),
		newFlow(client4, server4, 43001).data(0, httpGet),
		fl.syn(),
		{src: client4, dst: server4, fragOff: 3, l4: httpGet},
		{src: client4, dst: server4, ipOpts: []byte{1, 1, 1, 0}, proto: protoUDP, dport: guarded},
	} {
		f.Add(p.bytes())
	}
	g := openTestGuard(f, Config{Ports: []uint16{guarded}})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 1500 {
			return
		}
		resetState(t, g)
		x := judge(t, g, entryPoints[0], frame)
		resetState(t, g)
		c, err := tryJudge(t, g, entryPoints[1], frame)
		if errors.Is(err, unix.EINVAL) {
			return // refused by the skb test harness, not by the program
		}
		if err != nil {
			t.Fatal(err)
		}
		if x != c {
			t.Fatalf("xdp says %s, tc says %s for % x", x, c, frame)
		}
	})
}
