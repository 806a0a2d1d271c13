//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// guard.c: edgegate's packet guard. It runs at XDP (or TCX ingress when XDP
// cannot attach) in front of edgegate's listeners and drops, before a socket
// buffer is spent on them, packets to a guarded TCP port that cannot be the
// start of a TLS connection: non-TCP traffic, impossible TCP flags, sources
// on the blocklist or outside the allow list, and streams whose first bytes
// are not a TLS ClientHello record header.
//
// Layout follows xdp-tools' parsing_helpers.h and Katran: one small inline
// parser per header that bounds-checks against data_end before reading and
// advances a cursor; every loop has a fixed, named bound; every packet moves
// exactly one counter in a per-CPU array indexed by enum verdict.
//
// The same core (guard()) is compiled into two entry points, guard_xdp and
// guard_tc, which only translate the verdict into XDP_* or TCX_* codes.
//
// It is a prefilter, not the authority: edgegate parses every ClientHello
// again in userspace. What it cannot see (TCP checksums are not verified, so
// a corrupt segment that the kernel later discards still advances the
// check; bytes after a fragment boundary or past the 9th) is left to that
// second look.

// No kernel headers (see uapi.h): the BPF interface comes from uapi.h, the
// packet headers are laid out below, and libbpf's headers are
// architecture-neutral.
#include "uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual MIT/GPL";

// Loop bounds. Legitimate traffic needs far less than any of them. A frame
// with a third VLAN tag is not parsed (pass_not_guarded: the host stack does
// not deliver it to edgegate either); an IPv6 packet whose extension chain
// is longer than IPV6_EXT_MAX hides its port and is dropped as malformed.
#define VLAN_MAX_DEPTH 2  // 802.1Q and 802.1ad (QinQ)
#define IPV6_EXT_MAX 8    // extension headers walked before giving up

// Map sizes. FLOWS_MAX is only a default: the loader sizes the flow table
// from Config.FlowTableSize (DefaultFlowTableSize in guard.go).
#define PORTS_MAX 1024        // guarded ports
#define BLOCKLIST_MAX 65536   // blocked sources (LRU)
#define ALLOW_MAX 16384       // allow-list prefixes
#define FLOWS_MAX 262144      // streams being checked (LRU)

// The stream bytes checked per flow: the TLS record header (RFC 8446 5.1:
// content type, version, length) and the first handshake message's header
// (RFC 8446 4: message type, length).
#define TLS_RECORD_HDR_LEN 5
#define TLS_HANDSHAKE_HDR_LEN 4
#define TLS_PREFIX_LEN (TLS_RECORD_HDR_LEN + TLS_HANDSHAKE_HDR_LEN)

// Stream positions of the fields check_byte judges, and their values.
#define TLS_POS_CONTENT_TYPE 0
#define TLS_POS_VERSION_MAJOR 1
#define TLS_POS_VERSION_MINOR 2
#define TLS_POS_LENGTH_HI 3
#define TLS_POS_LENGTH_LO 4
#define TLS_POS_HANDSHAKE_TYPE 5

#define TLS_CONTENT_HANDSHAKE 0x16      // record content type: handshake
#define TLS_VERSION_MAJOR 0x03          // SSL 3.0 to TLS 1.3 are all {03,xx}
#define TLS_VERSION_MINOR_MAX 0x04      // {03,04}: TLS 1.3's number, the newest
#define TLS_RECORD_MAX_LEN (1 << 14)    // record length limit (RFC 8446 5.1)
#define TLS_HANDSHAKE_CLIENT_HELLO 0x01 // handshake message type

// Addresses are stored as 16 bytes, IPv4 v4-mapped (RFC 4291 2.5.5.2:
// 80 zero bits, 16 one bits, the IPv4 address).
#define ADDR_LEN 16
#define ADDR_BITS (ADDR_LEN * 8)   // prefix length of a single address
#define V4MAPPED_ZEROS 10          // leading zero bytes
#define V4MAPPED_ONES 2            // then 0xff bytes, then the IPv4 address

// flow_key.family.
#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

// enum verdict indexes the counters map. The Go side keeps the names in the
// same order (counters.go); a test checks they agree. Append only, so a
// verdict keeps its index across versions. Whether a verdict drops is
// listed in drops(), not implied by its place in the enum.
enum verdict {
	VERDICT_PASS_NOT_GUARDED = 0, // not IP, or not to a guarded port
	VERDICT_PASS_SYN,             // SYN without data: flow entry created
	VERDICT_PASS_TLS,             // new stream bytes checked: ClientHello so far
	VERDICT_PASS_NO_PAYLOAD,      // tracked flow, segment carries no data
	VERDICT_PASS_OTHER_SEQ,       // tracked flow, data not at the first unchecked byte
	VERDICT_PASS_UNTRACKED,       // no flow entry (checked, started before attach, evicted)
	VERDICT_PASS_FRAGMENT,        // non-first fragment, fragments: pass
	VERDICT_DROP_NOT_TLS,         // stream does not start like a ClientHello
	VERDICT_DROP_NON_TCP,         // UDP, SCTP, ... to a guarded port
	VERDICT_DROP_BAD_FLAGS,       // impossible TCP flag combination
	VERDICT_DROP_BLOCKED,         // source on the blocklist
	VERDICT_DROP_NOT_ALLOWED,     // allow-only port, source not in the allow list
	VERDICT_DROP_FRAGMENT,        // non-first fragment, fragments: drop
	VERDICT_DROP_MALFORMED,       // truncated or inconsistent headers
	VERDICT_PASS_PROXY_PORT,      // port expects a PROXY header first: bytes not checked
	VERDICT_MAX,
};

// Flags in struct port_policy. PORT_PROXY_HEADER marks a listener that
// accepts an inbound PROXY protocol header before the ClientHello: its
// streams do not start with a TLS record, so their first bytes are not
// checked (every other rule still applies).
#define PORT_ALLOW_ONLY 0x1
#define PORT_PROXY_HEADER 0x2

// Flags in struct guard_config.
#define CONFIG_DROP_FRAGMENTS 0x1

struct port_policy {
	__u32 flags;
};

struct guard_config {
	__u32 flags;
};

// Addresses are ADDR_LEN bytes everywhere; IPv4 is stored v4-mapped
// (::ffff:a.b.c.d), so one map serves both families.
struct addr_key {
	__u8 addr[ADDR_LEN];
};

struct lpm_key {
	__u32 prefixlen;
	__u8 addr[ADDR_LEN];
};

struct flow_key {
	__u8 saddr[ADDR_LEN];
	__u8 daddr[ADDR_LEN];
	__be16 sport;
	__be16 dport;
	__u8 family; // FAMILY_*: a v4-mapped IPv6 source never aliases an IPv4 flow
	__u8 pad[3];
};

// flow_state is what is known about a stream whose first bytes are not yet
// all checked: next_seq is the sequence number of the first unchecked byte,
// checked how many of the first TLS_PREFIX_LEN bytes passed, and byte3 the
// high byte of the record length (checked together with byte 4).
struct flow_state {
	__u32 next_seq;
	__u8 checked;
	__u8 byte3;
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, enum verdict);
	__type(value, __u64);
	__uint(max_entries, VERDICT_MAX);
} counters SEC(".maps");

// Guarded destination ports (host byte order) and their policy.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct port_policy);
	__uint(max_entries, PORTS_MAX);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct guard_config);
	__uint(max_entries, 1);
} config SEC(".maps");

// Source address -> block expiry in CLOCK_MONOTONIC nanoseconds
// (bpf_ktime_get_ns). Pinned: a restart keeps the blocks.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct addr_key);
	__type(value, __u64);
	__uint(max_entries, BLOCKLIST_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} blocklist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key);
	__type(value, __u8);
	__uint(max_entries, ALLOW_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} allow SEC(".maps");

// Streams whose first bytes are still being checked. The loader overrides
// max_entries with Config.FlowTableSize. Pinned: a restart keeps them.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
	__uint(max_entries, FLOWS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

// cursor walks the packet. off is the offset of pos from the start of the
// packet, kept alongside for the load_bytes helpers.
struct cursor {
	void *pos;
	void *end;
	__u32 off;
};

// packet collects what the parsers found.
struct packet {
	struct flow_key key;
	__u8 l4proto;
	__u8 nonfirst_fragment;
	__u32 l4_len; // bytes from the L4 header to the end of the IP payload
};

// Packet headers as on the wire. Bytes, not the kernel's bitfields, hold
// the sub-byte fields, so the layouts do not depend on the target's bit
// order; only the fields guard.c reads are named.

#define ETH_ALEN 6           // bytes in a MAC address
#define ETH_P_IP 0x0800      // EtherType: IPv4
#define ETH_P_IPV6 0x86dd    // EtherType: IPv6
#define ETH_P_8021Q 0x8100   // EtherType: 802.1Q VLAN tag
#define ETH_P_8021AD 0x88a8  // EtherType: 802.1ad (QinQ) outer tag

struct ethhdr {
	__u8 h_dest[ETH_ALEN];
	__u8 h_source[ETH_ALEN];
	__be16 h_proto;
};

// IP protocol numbers (next header values).
#define IPPROTO_HOPOPTS 0    // IPv6 hop-by-hop options
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_DCCP 33
#define IPPROTO_ROUTING 43   // IPv6 routing header
#define IPPROTO_FRAGMENT 44  // IPv6 fragment header
#define IPPROTO_DSTOPTS 60   // IPv6 destination options
#define IPPROTO_SCTP 132
#define IPPROTO_UDPLITE 136

#define IPV4_IHL_MASK 0x0f      // header length, low nibble of version_ihl
#define IPV4_IHL_UNIT 4         // ... counted in 32-bit words
#define IPV4_FRAG_OFFSET 0x1fff // fragment offset bits of frag_off

struct iphdr {
	__u8 version_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6hdr {
	__be32 version_class_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[ADDR_LEN];
	__u8 daddr[ADDR_LEN];
};

// Hop-by-hop, routing and destination options headers count their length
// in 8-byte units, not counting the first 8 (RFC 8200 4.3).
#define IPV6_EXT_LEN_UNIT 8

// The start shared by hop-by-hop, routing and destination options headers.
struct ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

// TCP flag bits in tcphdr.flags.
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define TCP_DOFF_SHIFT 4 // data offset: high nibble of doff_res
#define TCP_DOFF_UNIT 4  // ... counted in 32-bit words

struct tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res;
	__u8 flags;
	__be16 window;
	__be16 check;
	__be16 urg_ptr;
};

static __always_inline enum verdict count(enum verdict v)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &v);
	if (c)
		*c += 1;
	return v;
}

static __always_inline int vlan_proto(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

// parse_eth returns the EtherType after up to VLAN_MAX_DEPTH tags, or -1
// if the frame is truncated.
static __always_inline int parse_eth(struct cursor *c)
{
	struct ethhdr *eth = c->pos;
	if ((void *)(eth + 1) > c->end)
		return -1;
	c->pos = eth + 1;
	c->off += sizeof(*eth);
	__be16 proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (!vlan_proto(proto))
			break;
		struct vlan_hdr *vh = c->pos;
		if ((void *)(vh + 1) > c->end)
			return -1;
		proto = vh->encapsulated_proto;
		c->pos = vh + 1;
		c->off += sizeof(*vh);
	}
	return bpf_ntohs(proto);
}

static __always_inline void map_v4(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, V4MAPPED_ZEROS);
	__builtin_memset(dst + V4MAPPED_ZEROS, 0xff, V4MAPPED_ONES);
	__builtin_memcpy(dst + V4MAPPED_ZEROS + V4MAPPED_ONES, &addr, sizeof(addr));
}

// parse_ipv4 skips the header including options. Returns 0, or -1 if the
// header is truncated or inconsistent.
static __always_inline int parse_ipv4(struct cursor *c, struct packet *p, __u32 frame_len)
{
	struct iphdr *ip = c->pos;
	if ((void *)(ip + 1) > c->end)
		return -1;
	__u32 hlen = (ip->version_ihl & IPV4_IHL_MASK) * IPV4_IHL_UNIT;
	if (hlen < sizeof(*ip))
		return -1;
	if (c->pos + hlen > c->end)
		return -1;

	__u32 tot = bpf_ntohs(ip->tot_len);
	// BIG TCP (GRO beyond 64 KiB) leaves tot_len 0 at TC; use the frame.
	if (tot == 0)
		tot = frame_len - c->off;
	if (tot < hlen || c->off + tot > frame_len)
		return -1;

	p->l4proto = ip->protocol;
	p->l4_len = tot - hlen;
	p->nonfirst_fragment = (ip->frag_off & bpf_htons(IPV4_FRAG_OFFSET)) != 0;
	p->key.family = FAMILY_IPV4;
	map_v4(p->key.saddr, ip->saddr);
	map_v4(p->key.daddr, ip->daddr);

	c->pos += hlen;
	c->off += hlen;
	return 0;
}

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

#define IPV6_FRAG_OFFSET 0xfff8 // fragment offset bits of frag_off (the low 3 are flags)

// parse_ipv6 skips the header and up to IPV6_EXT_MAX extension headers.
// Returns 0, or -1 if truncated, inconsistent or the chain is longer than
// the bound (then the L4 header, and so the port, cannot be found).
static __always_inline int parse_ipv6(struct cursor *c, struct packet *p, __u32 frame_len)
{
	struct ipv6hdr *ip6 = c->pos;
	if ((void *)(ip6 + 1) > c->end)
		return -1;

	__u32 plen = bpf_ntohs(ip6->payload_len);
	// BIG TCP (GRO beyond 64 KiB) leaves payload_len 0 at TC.
	if (plen == 0)
		plen = frame_len - c->off - sizeof(*ip6);
	if (c->off + sizeof(*ip6) + plen > frame_len)
		return -1;

	p->key.family = FAMILY_IPV6;
	__builtin_memcpy(p->key.saddr, ip6->saddr, ADDR_LEN);
	__builtin_memcpy(p->key.daddr, ip6->daddr, ADDR_LEN);
	__u8 next = ip6->nexthdr;
	c->pos = ip6 + 1;
	c->off += sizeof(*ip6);

	__u32 ext_len = 0;
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS: {
			struct ipv6_opt_hdr *h = c->pos;
			if ((void *)(h + 1) > c->end)
				return -1;
			__u32 len = (h->hdrlen + 1) * IPV6_EXT_LEN_UNIT;
			if (c->pos + len > c->end)
				return -1;
			next = h->nexthdr;
			c->pos += len;
			c->off += len;
			ext_len += len;
			break;
		}
		case IPPROTO_FRAGMENT: {
			struct ipv6_frag_hdr *h = c->pos;
			if ((void *)(h + 1) > c->end)
				return -1;
			if (h->frag_off & bpf_htons(IPV6_FRAG_OFFSET))
				p->nonfirst_fragment = 1;
			next = h->nexthdr;
			c->pos = h + 1;
			c->off += sizeof(*h);
			ext_len += sizeof(*h);
			break;
		}
		default:
			goto done;
		}
		if (p->nonfirst_fragment)
			goto done;
	}
	// Still an extension header after the bound: the port is unknowable.
	if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING ||
	    next == IPPROTO_DSTOPTS || next == IPPROTO_FRAGMENT)
		return -1;
done:
	if (ext_len > plen)
		return -1;
	p->l4proto = next;
	p->l4_len = plen - ext_len;
	return 0;
}

// blocked reports whether the source is on the blocklist with an expiry in
// the future. Expired entries are left for edgegate (or LRU) to remove, so
// the data path never races a fresh block written from userspace.
static __always_inline int blocked(struct packet *p)
{
	__u64 *until = bpf_map_lookup_elem(&blocklist, p->key.saddr);
	return until && *until > bpf_ktime_get_ns();
}

static __always_inline int allowed(struct packet *p)
{
	struct lpm_key k = {.prefixlen = ADDR_BITS};
	__builtin_memcpy(k.addr, p->key.saddr, ADDR_LEN);
	return bpf_map_lookup_elem(&allow, &k) != NULL;
}

// bad_flags reports TCP flag combinations no correct stack sends:
//   SYN+FIN, SYN+RST: a SYN opens, FIN and RST close;
//   none of SYN, ACK, RST: after the SYN every segment carries ACK, and the
//   only ACK-less segments are a SYN and a RST (RFC 9293 3.10.7), so this
//   covers NULL, FIN, Xmas (FIN+PSH+URG) and PSH-only scans.
// Deliberately allowed: FIN+RST (not forbidden by RFC 9293 and seen from
// some stacks), SYN with PSH/URG/ECE/CWR (TFO, ECN set-up), reserved bits
// (AccECN uses one), SYN+ACK (simultaneous open).
static __always_inline int bad_flags(__u8 flags)
{
	if ((flags & TCP_SYN) && (flags & (TCP_FIN | TCP_RST)))
		return 1;
	if (!(flags & (TCP_SYN | TCP_ACK | TCP_RST)))
		return 1;
	return 0;
}

// check_byte judges the byte at stream position pos of a TLS stream: a
// handshake record, version 3.0-3.4, length at most 2^14 and a
// ClientHello as the first handshake message. 3.0 is allowed because
// RFC 5246 E.1 lets a client put {03,00} in its first record, and
// crypto/tls and edgegate's sni reader accept it. Bytes 6-8 (handshake
// length) are not constrained: post-quantum hellos span several records.
static __always_inline int check_byte(struct flow_state *st, __u32 pos, __u8 b)
{
	switch (pos) {
	case TLS_POS_CONTENT_TYPE:
		return b == TLS_CONTENT_HANDSHAKE;
	case TLS_POS_VERSION_MAJOR:
		return b == TLS_VERSION_MAJOR;
	case TLS_POS_VERSION_MINOR:
		return b <= TLS_VERSION_MINOR_MAX;
	case TLS_POS_LENGTH_HI:
		st->byte3 = b;
		return b <= TLS_RECORD_MAX_LEN >> 8;
	case TLS_POS_LENGTH_LO:
		return ((st->byte3 << 8) | b) <= TLS_RECORD_MAX_LEN;
	case TLS_POS_HANDSHAKE_TYPE:
		return b == TLS_HANDSHAKE_CLIENT_HELLO;
	}
	return 1;
}

// check_payload judges the stream bytes a segment carries at the first
// unchecked position. payload_off is the packet offset of the segment's
// first data byte and skip how many of its bytes precede next_seq. On
// success st is advanced; on failure st is left as it was, so a
// retransmission is judged again.
static __always_inline int check_payload(void *ctx, int is_xdp, struct flow_state *st,
					 __u32 payload_off, __u32 skip, __u32 payload_len)
{
	__u8 buf[TLS_PREFIX_LEN] = {};
	__u32 checked = st->checked;
	if (checked >= TLS_PREFIX_LEN)
		return 1;
	__u32 n = payload_len - skip;
	if (n > TLS_PREFIX_LEN - checked)
		n = TLS_PREFIX_LEN - checked;
	// Callers guarantee 1 <= n <= TLS_PREFIX_LEN, and clang knows it; the verifier does
	// not, so keep clang from folding the check away.
	barrier_var(n);
	if (n < 1 || n > TLS_PREFIX_LEN)
		return 1;

	long err;
	if (is_xdp)
		err = bpf_xdp_load_bytes(ctx, payload_off + skip, buf, n);
	else
		err = bpf_skb_load_bytes(ctx, payload_off + skip, buf, n);
	if (err)
		return 0;

	struct flow_state next = *st;
	for (int i = 0; i < TLS_PREFIX_LEN; i++) {
		if (i >= n)
			break;
		if (!check_byte(&next, checked + i, buf[i]))
			return 0;
	}
	next.checked = checked + n;
	next.next_seq = st->next_seq + n;
	*st = next;
	return 1;
}

struct l4_ports {
	__be16 source;
	__be16 dest;
};

// judge_tcp decides a TCP segment to a guarded port once source checks
// passed.
static __always_inline enum verdict judge_tcp(void *ctx, int is_xdp, struct cursor *c,
					      struct packet *p, __u32 port_flags)
{
	struct tcphdr *th = c->pos;
	if ((void *)(th + 1) > c->end)
		return VERDICT_DROP_MALFORMED;
	__u32 doff = (th->doff_res >> TCP_DOFF_SHIFT) * TCP_DOFF_UNIT;
	if (doff < sizeof(*th) || doff > p->l4_len)
		return VERDICT_DROP_MALFORMED;
	if (bad_flags(th->flags))
		return VERDICT_DROP_BAD_FLAGS;
	if (port_flags & PORT_PROXY_HEADER)
		return VERDICT_PASS_PROXY_PORT;

	__u32 payload_off = c->off + doff;
	__u32 payload_len = p->l4_len - doff;
	__u32 seq = bpf_ntohl(th->seq);

	if ((th->flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		// A SYN (re)starts the check of its stream. With TCP Fast Open the
		// hello rides in the SYN; a SYN whose data is not one is dropped
		// and, like every dropped segment, leaves the flow table as it was.
		struct flow_state st = {.next_seq = seq + 1}; // the SYN takes one
		enum verdict v = VERDICT_PASS_SYN;
		if (payload_len > 0) {
			if (!check_payload(ctx, is_xdp, &st, payload_off, 0, payload_len))
				return VERDICT_DROP_NOT_TLS;
			v = VERDICT_PASS_TLS;
		}
		if (st.checked >= TLS_PREFIX_LEN)
			bpf_map_delete_elem(&flows, &p->key);
		else
			bpf_map_update_elem(&flows, &p->key, &st, BPF_ANY);
		return v;
	}

	struct flow_state *cur = bpf_map_lookup_elem(&flows, &p->key);
	if (!cur)
		return VERDICT_PASS_UNTRACKED;
	if (payload_len == 0)
		return VERDICT_PASS_NO_PAYLOAD;

	// skip: how far next_seq lies into this segment (serial arithmetic).
	__s32 skip = (__s32)(cur->next_seq - seq);
	if (skip < 0 || (__u32)skip >= payload_len)
		return VERDICT_PASS_OTHER_SEQ;

	struct flow_state st = *cur;
	if (!check_payload(ctx, is_xdp, &st, payload_off, skip, payload_len))
		return VERDICT_DROP_NOT_TLS;
	if (st.checked >= TLS_PREFIX_LEN)
		bpf_map_delete_elem(&flows, &p->key);
	else
		bpf_map_update_elem(&flows, &p->key, &st, BPF_EXIST);
	return VERDICT_PASS_TLS;
}

// guard is the shared core. frame_len is the packet length from the start
// of the Ethernet header (it can exceed end - data at TC with paged skbs).
static __always_inline enum verdict guard(void *ctx, int is_xdp, void *data, void *data_end,
					  __u32 frame_len)
{
	struct cursor c = {.pos = data, .end = data_end};
	struct packet p = {};

	int proto = parse_eth(&c);
	if (proto < 0)
		return VERDICT_DROP_MALFORMED;

	int err;
	if (proto == ETH_P_IP)
		err = parse_ipv4(&c, &p, frame_len);
	else if (proto == ETH_P_IPV6)
		err = parse_ipv6(&c, &p, frame_len);
	else
		return VERDICT_PASS_NOT_GUARDED;
	if (err)
		return VERDICT_DROP_MALFORMED;

	if (p.nonfirst_fragment) {
		// No L4 header, so no port: the setting applies to all of them.
		__u32 zero = 0;
		struct guard_config *cfg = bpf_map_lookup_elem(&config, &zero);
		if (cfg && (cfg->flags & CONFIG_DROP_FRAGMENTS))
			return VERDICT_DROP_FRAGMENT;
		return VERDICT_PASS_FRAGMENT;
	}

	switch (p.l4proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
	case IPPROTO_SCTP:
	case IPPROTO_DCCP:
		break;
	default:
		// ICMP (path MTU discovery), ESP, GRE...: no port to guard.
		return VERDICT_PASS_NOT_GUARDED;
	}

	// All of these carry source and destination ports in their first 4
	// bytes; the rest of the header is only read once the port is guarded.
	struct l4_ports *ports_hdr = c.pos;
	if ((void *)(ports_hdr + 1) > c.end || p.l4_len < sizeof(*ports_hdr))
		return VERDICT_DROP_MALFORMED;
	p.key.sport = ports_hdr->source;
	p.key.dport = ports_hdr->dest;
	__u16 dport = bpf_ntohs(ports_hdr->dest);
	struct port_policy *pol = bpf_map_lookup_elem(&ports, &dport);
	if (!pol)
		return VERDICT_PASS_NOT_GUARDED;

	if (blocked(&p))
		return VERDICT_DROP_BLOCKED;
	if ((pol->flags & PORT_ALLOW_ONLY) && !allowed(&p))
		return VERDICT_DROP_NOT_ALLOWED;
	if (p.l4proto != IPPROTO_TCP)
		return VERDICT_DROP_NON_TCP;

	return judge_tcp(ctx, is_xdp, &c, &p, pol->flags);
}

// drops says whether a verdict drops its packet. Each verdict is listed
// by name and there is no default, so a new verdict fails the build
// (-Wswitch under -Werror) until it is given an action here, and cannot
// change another's by where it lands in the enum.
static __always_inline int drops(enum verdict v)
{
	switch (v) {
	case VERDICT_PASS_NOT_GUARDED:
	case VERDICT_PASS_SYN:
	case VERDICT_PASS_TLS:
	case VERDICT_PASS_NO_PAYLOAD:
	case VERDICT_PASS_OTHER_SEQ:
	case VERDICT_PASS_UNTRACKED:
	case VERDICT_PASS_FRAGMENT:
	case VERDICT_PASS_PROXY_PORT:
		return 0;
	case VERDICT_DROP_NOT_TLS:
	case VERDICT_DROP_NON_TCP:
	case VERDICT_DROP_BAD_FLAGS:
	case VERDICT_DROP_BLOCKED:
	case VERDICT_DROP_NOT_ALLOWED:
	case VERDICT_DROP_FRAGMENT:
	case VERDICT_DROP_MALFORMED:
		return 1;
	case VERDICT_MAX: // a count, not a verdict: guard() never returns it
		break;
	}
	return 0;
}

SEC("xdp")
int guard_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	enum verdict v = count(guard(ctx, 1, data, data_end, data_end - data));
	return drops(v) ? XDP_DROP : XDP_PASS;
}

// Headers are read with direct packet access; at TC they may sit partly in
// paged data, so make the first HDR_PULL_LEN bytes linear first.
#define HDR_PULL_LEN 256

SEC("tc")
int guard_tc(struct __sk_buff *skb)
{
	__u32 linear = skb->data_end - skb->data;
	if (linear < HDR_PULL_LEN && skb->len > linear)
		bpf_skb_pull_data(skb, skb->len < HDR_PULL_LEN ? skb->len : HDR_PULL_LEN);

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	enum verdict v = count(guard(skb, 0, data, data_end, skb->len));
	// TCX_NEXT rather than TCX_PASS, so programs after ours still run.
	return drops(v) ? TCX_DROP : TCX_NEXT;
}
