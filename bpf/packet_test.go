package bpf

import (
	"bytes"
	"encoding/binary"
	"fmt"
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

// pkt describes a test frame; bytes() lays it out. BPF_PROG_TEST_RUN does
// not verify checksums and the guard judges packets without them, but the
// IPv4 header checksum is set: a segment rewritten into a RST gets it
// updated, not recomputed. The TCP checksum is left zero.
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
		binary.BigEndian.PutUint16(ip[10:], ^onesSum(0, ip))
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

// onesSum adds b, as big-endian 16-bit words, to the ones' complement sum
// sum (RFC 1071).
func onesSum(sum uint16, b []byte) uint16 {
	s := uint32(sum)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// frame is what parseFrame found in a TCP frame.
type frame struct {
	l3, l4     int // offsets of the IP and TCP headers
	src, dst   netip.Addr
	tcp        []byte // the TCP header, options included
	payload    []byte
	ipv4Header []byte
	seq, ack   uint32
	flags      uint8
	// moreFragments: IPv4 MF, or an IPv6 fragment header's M flag.
	moreFragments bool
}

// parseFrame parses an Ethernet frame carrying TCP over IPv4 or IPv6,
// with VLAN tags and IPv6 extension headers, as pkt lays them out.
func parseFrame(b []byte) (frame, error) {
	var f frame
	off := 12
	for {
		if len(b) < off+2 {
			return f, fmt.Errorf("truncated Ethernet header")
		}
		et := binary.BigEndian.Uint16(b[off:])
		off += 2
		if et == 0x8100 || et == 0x88a8 {
			off += 2
			continue
		}
		f.l3 = off
		switch et {
		case 0x0800:
			if len(b) < off+20 {
				return f, fmt.Errorf("truncated IPv4 header")
			}
			hl := int(b[off]&0xf) * 4
			tot := int(binary.BigEndian.Uint16(b[off+2:]))
			if b[off+9] != protoTCP || len(b) < off+tot || tot < hl {
				return f, fmt.Errorf("not a whole TCP/IPv4 packet")
			}
			f.src = netip.AddrFrom4([4]byte(b[off+12 : off+16]))
			f.dst = netip.AddrFrom4([4]byte(b[off+16 : off+20]))
			f.ipv4Header = b[off : off+hl]
			f.moreFragments = b[off+6]&0x20 != 0
			f.l4 = off + hl
			b = b[:off+tot]
		case 0x86dd:
			if len(b) < off+40 {
				return f, fmt.Errorf("truncated IPv6 header")
			}
			plen := int(binary.BigEndian.Uint16(b[off+4:]))
			if len(b) < off+40+plen {
				return f, fmt.Errorf("truncated IPv6 payload")
			}
			f.src = netip.AddrFrom16([16]byte(b[off+8 : off+24]))
			f.dst = netip.AddrFrom16([16]byte(b[off+24 : off+40]))
			next, p := b[off+6], off+40
			for next != protoTCP {
				switch next {
				case protoHopOpts, protoRouting, protoDstOpts:
					next, p = b[p], p+(int(b[p+1])+1)*8
				case protoFragment:
					f.moreFragments = f.moreFragments || b[p+3]&1 != 0
					next, p = b[p], p+8
				default:
					return f, fmt.Errorf("IPv6 next header %d", next)
				}
			}
			f.l4 = p
			b = b[:off+40+plen]
		default:
			return f, fmt.Errorf("EtherType %#x", et)
		}
		break
	}
	if len(b) < f.l4+20 {
		return f, fmt.Errorf("truncated TCP header")
	}
	doff := int(b[f.l4+12]>>4) * 4
	if doff < 20 || len(b) < f.l4+doff {
		return f, fmt.Errorf("bad TCP data offset %d", doff)
	}
	f.tcp = b[f.l4 : f.l4+doff]
	f.payload = b[f.l4+doff:]
	f.seq = binary.BigEndian.Uint32(f.tcp[4:])
	f.ack = binary.BigEndian.Uint32(f.tcp[8:])
	f.flags = f.tcp[13]
	return f, nil
}

// tcpChecksumOK verifies the TCP checksum of a parsed frame.
func (f frame) tcpChecksumOK() bool {
	seg := append(append([]byte(nil), f.tcp...), f.payload...)
	var pseudo []byte
	if f.src.Is4() {
		s, d := f.src.As4(), f.dst.As4()
		pseudo = append(append(pseudo, s[:]...), d[:]...)
		pseudo = append(pseudo, 0, protoTCP)
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(seg)))
	} else {
		s, d := f.src.As16(), f.dst.As16()
		pseudo = append(append(pseudo, s[:]...), d[:]...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
		pseudo = append(pseudo, 0, 0, 0, protoTCP)
	}
	return onesSum(onesSum(0, pseudo), seg) == 0xffff
}

// checkReset checks that out is in rewritten as guard.c's reset_segment
// does: the same Ethernet and IP headers but for the IP length (and
// IPv4 checksum), then a bare RST for the same ports whose sequence number
// lies in the segment, without options or data, with valid checksums. The
// frame may go on past the IP length, which the IP layer cuts off.
func checkReset(in, out []byte) error {
	fin, err := parseFrame(in)
	if err != nil {
		return fmt.Errorf("input: %w", err)
	}
	fo, err := parseFrame(out)
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if fo.l4 != fin.l4 || !bytes.Equal(out[:fin.l3], in[:fin.l3]) {
		return fmt.Errorf("link or IP header layout changed")
	}
	if fin.src.Is4() {
		ih, oh := bytes.Clone(fin.ipv4Header), bytes.Clone(fo.ipv4Header)
		if got, want := binary.BigEndian.Uint16(oh[2:]), uint16(len(oh)+20); got != want {
			return fmt.Errorf("IPv4 total length %d, want %d", got, want)
		}
		if onesSum(0, oh) != 0xffff {
			return fmt.Errorf("IPv4 header checksum %#04x is wrong", binary.BigEndian.Uint16(oh[10:]))
		}
		for _, h := range [][]byte{ih, oh} {
			copy(h[2:4], []byte{0, 0})
			copy(h[10:12], []byte{0, 0})
		}
		if !bytes.Equal(ih, oh) {
			return fmt.Errorf("IPv4 header changed beyond length and checksum: % x -> % x", ih, oh)
		}
	} else {
		if got, want := int(binary.BigEndian.Uint16(out[fo.l3+4:])), fo.l4-fo.l3-40+20; got != want {
			return fmt.Errorf("IPv6 payload length %d, want %d", got, want)
		}
		ih, oh := bytes.Clone(in[fin.l3:fin.l4]), bytes.Clone(out[fo.l3:fo.l4])
		copy(ih[4:6], []byte{0, 0})
		copy(oh[4:6], []byte{0, 0})
		if !bytes.Equal(ih, oh) {
			return fmt.Errorf("IPv6 headers changed beyond the payload length")
		}
	}
	if !bytes.Equal(fo.tcp[:4], fin.tcp[:4]) {
		return fmt.Errorf("ports changed")
	}
	if len(fo.payload) != 0 {
		return fmt.Errorf("the RST carries %d bytes within the IP length", len(fo.payload))
	}
	if fo.flags != tcpRST || len(fo.tcp) != 20 || fo.tcp[12] != 5<<4 || fo.ack != 0 ||
		binary.BigEndian.Uint16(fo.tcp[14:]) != 0 || binary.BigEndian.Uint16(fo.tcp[18:]) != 0 {
		return fmt.Errorf("not a bare RST: % x", fo.tcp)
	}
	if d := fo.seq - fin.seq; d >= uint32(len(fin.payload)) {
		return fmt.Errorf("RST sequence number %d outside the segment's %d+%d", fo.seq, fin.seq, len(fin.payload))
	}
	if !fo.tcpChecksumOK() {
		return fmt.Errorf("TCP checksum %#04x is wrong", binary.BigEndian.Uint16(fo.tcp[16:]))
	}
	return nil
}
