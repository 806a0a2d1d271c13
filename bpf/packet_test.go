package bpf

import (
	"encoding/binary"
	"net/netip"
)

// TCP flag bits as on the wire (byte 13 of the header).
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80
)

// IP protocol numbers used in tests.
const (
	protoHopOpts  = 0
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoDstOpts  = 60
	protoSCTP     = 132
)

// extHdr is one IPv6 extension header: its type and its body after the
// next-header byte (padded by the builder to a multiple of 8).
type extHdr struct {
	typ  uint8
	body []byte
}

// pkt describes a test frame; bytes() lays it out. Checksums are left zero:
// BPF_PROG_TEST_RUN does not verify them and the guard does not read them.
type pkt struct {
	src, dst     netip.Addr
	vlans        []uint16 // TPIDs outermost first, e.g. 0x88a8, 0x8100
	etherType    uint16   // overrides the type derived from src (e.g. ARP)
	ipOpts       []byte   // IPv4 options, a multiple of 4 bytes
	ext          []extHdr // IPv6 extension headers, in order
	fragOff      uint16   // fragment offset in 8-byte units
	moreFrags    bool
	proto        uint8 // default TCP
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	tcpOpts      []byte // a multiple of 4 bytes
	doff         int    // overrides the data offset (in 32-bit words)
	payload      []byte
	pad          int // Ethernet padding after the IP packet
	truncate     int // cut this many bytes off the end
	l4           []byte
	totLenDelta  int // added to the IP length field
}

func (p pkt) l4bytes() []byte {
	if p.l4 != nil {
		return p.l4
	}
	proto := p.proto
	if proto == 0 {
		proto = protoTCP
	}
	if proto != protoTCP {
		h := make([]byte, 8, 8+len(p.payload))
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(p.payload)))
		return append(h, p.payload...)
	}
	hl := 20 + len(p.tcpOpts)
	h := make([]byte, hl, hl+len(p.payload))
	binary.BigEndian.PutUint16(h[0:], p.sport)
	binary.BigEndian.PutUint16(h[2:], p.dport)
	binary.BigEndian.PutUint32(h[4:], p.seq)
	binary.BigEndian.PutUint32(h[8:], p.ack)
	doff := hl / 4
	if p.doff != 0 {
		doff = p.doff
	}
	h[12] = byte(doff << 4)
	h[13] = p.flags
	binary.BigEndian.PutUint16(h[14:], 64240)
	copy(h[20:], p.tcpOpts)
	return append(h, p.payload...)
}

func (p pkt) bytes() []byte {
	proto := p.proto
	if proto == 0 {
		proto = protoTCP
	}
	b := []byte{
		0x02, 0, 0, 0, 0, 0x02, // destination MAC
		0x02, 0, 0, 0, 0, 0x01, // source MAC
	}
	for _, tpid := range p.vlans {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, 7) // VLAN id
	}
	l4 := p.l4bytes()
	switch {
	case p.etherType != 0:
		b = binary.BigEndian.AppendUint16(b, p.etherType)
		b = append(b, make([]byte, 28)...)
	case p.src.Is4():
		b = binary.BigEndian.AppendUint16(b, 0x0800)
		hl := 20 + len(p.ipOpts)
		ip := make([]byte, hl)
		ip[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+len(l4)+p.totLenDelta))
		frag := p.fragOff & 0x1fff
		if p.moreFrags {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(ip[6:], frag)
		ip[8] = 64
		ip[9] = proto
		s, d := p.src.As4(), p.dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		copy(ip[20:], p.ipOpts)
		b = append(b, ip...)
		b = append(b, l4...)
	default:
		b = binary.BigEndian.AppendUint16(b, 0x86dd)
		var exts []byte
		next := proto
		for i := len(p.ext) - 1; i >= 0; i-- {
			e := p.ext[i]
			var h []byte
			if e.typ == protoFragment {
				h = make([]byte, 8)
				h[0] = next
				frag := p.fragOff << 3
				if p.moreFrags {
					frag |= 1
				}
				binary.BigEndian.PutUint16(h[2:], frag)
				binary.BigEndian.PutUint32(h[4:], 0x1234)
			} else {
				n := (2 + len(e.body) + 7) / 8 * 8
				h = make([]byte, n)
				h[0] = next
				h[1] = byte(n/8 - 1)
				copy(h[2:], e.body)
			}
			exts = append(h, exts...)
			next = e.typ
		}
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(exts)+len(l4)+p.totLenDelta))
		ip[6] = next
		ip[7] = 64
		s, d := p.src.As16(), p.dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		b = append(b, ip...)
		b = append(b, exts...)
		b = append(b, l4...)
	}
	b = append(b, make([]byte, p.pad)...)
	return b[:len(b)-p.truncate]
}

// flow builds the packets of one client connection; off is the stream
// offset of a segment's first byte (0 = first byte after the SYN).
type flow struct {
	src, dst     netip.Addr
	sport, dport uint16
	isn          uint32
	vlans        []uint16
	ipOpts       []byte
	ext          []extHdr
	tcpOpts      []byte
}

func (f flow) base() pkt {
	return pkt{src: f.src, dst: f.dst, sport: f.sport, dport: f.dport, vlans: f.vlans,
		ipOpts: f.ipOpts, ext: f.ext, tcpOpts: f.tcpOpts}
}

func (f flow) syn() pkt {
	p := f.base()
	p.seq = f.isn
	p.flags = tcpSYN
	return p
}

func (f flow) synData(data []byte) pkt {
	p := f.syn()
	p.payload = data
	return p
}

func (f flow) ack() pkt {
	p := f.base()
	p.seq = f.isn + 1
	p.ack = 1
	p.flags = tcpACK
	return p
}

func (f flow) data(off int, data []byte) pkt {
	p := f.base()
	p.seq = f.isn + 1 + uint32(off)
	p.ack = 1
	p.flags = tcpACK | tcpPSH
	p.payload = data
	return p
}

// htons returns v as the map holds a __be16: network byte order, read back
// as a host integer.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}
