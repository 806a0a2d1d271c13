//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// parse.h: the packet parsers guard.c and reference.c share, so that the
// reference program the guard is benchmarked against parses exactly the
// same headers. Layout follows xdp-tools' parsing_helpers.h: one small
// inline parser per header that bounds-checks against the end of the
// packet before reading and advances a cursor; every loop has a fixed,
// named bound.
//
// Include uapi.h and libbpf's bpf_helpers.h and bpf_endian.h first.

#ifndef EDGEGATE_PARSE_H
#define EDGEGATE_PARSE_H

// Loop bounds. Legitimate traffic needs far less than any of them. A frame
// with a third VLAN tag is not parsed (pass_not_guarded: the host stack does
// not deliver it to edgegate either); an IPv6 packet whose extension chain
// is longer than IPV6_EXT_MAX hides its port and is dropped as malformed.
#define VLAN_MAX_DEPTH 2  // 802.1Q and 802.1ad (QinQ)
#define IPV6_EXT_MAX 8    // extension headers walked before giving up

// Addresses are stored as 16 bytes, IPv4 v4-mapped (RFC 4291 2.5.5.2:
// 80 zero bits, 16 one bits, the IPv4 address).
#define ADDR_LEN 16
#define ADDR_BITS (ADDR_LEN * 8)   // prefix length of a single address
#define V4MAPPED_ZEROS 10          // leading zero bytes
#define V4MAPPED_ONES 2            // then 0xff bytes, then the IPv4 address

// flow_key.family.
#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

struct flow_key {
	__u8 saddr[ADDR_LEN] __attribute__((aligned(8)));
	__u8 daddr[ADDR_LEN];
	__be16 sport;
	__be16 dport;
	__u8 family; // FAMILY_*: a v4-mapped IPv6 source never aliases an IPv4 flow
	__u8 pad[3];
};

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
	__u8 more_fragments; // a fragment other than the last (IPv4 MF, IPv6 M)
	__u32 l3_off;        // offset of the IP header
	__u32 l4_len;        // bytes from the L4 header to the end of the IP payload
};

// Packet headers as on the wire. Bytes, not the kernel's bitfields, hold
// the sub-byte fields, so the layouts do not depend on the target's bit
// order; only the fields guard.c and reference.c read are named.

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
#define IPV4_MORE_FRAGMENTS 0x2000 // MF flag in frag_off

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

// map_v4 writes addr v4-mapped to dst (ADDR_LEN bytes, 8-byte aligned) in
// two 8-byte stores, rather than byte ranges: a later read of 8 bytes that
// spans two narrower stores cannot take its bytes from the store buffer
// and waits for both stores to reach the cache, which costs more than the
// rest of a SYN's hashing.
static __always_inline void map_v4(__u8 *dst, __be32 addr)
{
	__u64 *w = (__u64 *)dst;
	w[0] = 0; // the first 8 of the V4MAPPED_ZEROS zero bytes
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	w[1] = (__u64)addr << 32 | 0xffff0000; // 0, 0, 0xff, 0xff, then the address
#else
	w[1] = 0xffff00000000ULL | addr;
#endif
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
	p->more_fragments = (ip->frag_off & bpf_htons(IPV4_MORE_FRAGMENTS)) != 0;
	p->l3_off = c->off;
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
#define IPV6_MORE_FRAGMENTS 0x0001 // M flag in frag_off

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

	p->l3_off = c->off;
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
			if (h->frag_off & bpf_htons(IPV6_MORE_FRAGMENTS))
				p->more_fragments = 1;
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

struct l4_ports {
	__be16 source;
	__be16 dest;
};

// What parse_packet found.
enum parsed {
	PARSED_PORTS,     // an L4 header with ports: p is complete, c is at the L4 header
	PARSED_NOT_IP,    // neither IPv4 nor IPv6 (or a third VLAN tag)
	PARSED_NO_PORTS,  // a protocol without ports: ICMP (path MTU discovery), ESP, GRE...
	PARSED_FRAGMENT,  // a non-first fragment: no L4 header
	PARSED_MALFORMED, // truncated or inconsistent headers
};

// parse_packet parses the Ethernet and IP headers and, for the protocols
// that carry ports in their first 4 bytes (TCP, UDP, UDP-Lite, SCTP,
// DCCP), the ports. frame_len is the packet length from the start of the
// Ethernet header (it can exceed end - data at TC with paged skbs).
static __always_inline enum parsed parse_packet(struct cursor *c, struct packet *p, __u32 frame_len)
{
	int proto = parse_eth(c);
	if (proto < 0)
		return PARSED_MALFORMED;

	int err;
	if (proto == ETH_P_IP)
		err = parse_ipv4(c, p, frame_len);
	else if (proto == ETH_P_IPV6)
		err = parse_ipv6(c, p, frame_len);
	else
		return PARSED_NOT_IP;
	if (err)
		return PARSED_MALFORMED;
	if (p->nonfirst_fragment)
		return PARSED_FRAGMENT;

	switch (p->l4proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
	case IPPROTO_SCTP:
	case IPPROTO_DCCP:
		break;
	default:
		return PARSED_NO_PORTS;
	}

	struct l4_ports *ports_hdr = c->pos;
	if ((void *)(ports_hdr + 1) > c->end || p->l4_len < sizeof(*ports_hdr))
		return PARSED_MALFORMED;
	// Both ports in one 4-byte store (see map_v4): the flow hash reads
	// them as one word.
	*(__u32 *)&p->key.sport = *(__u32 *)ports_hdr;
	return PARSED_PORTS;
}

// parse_tcp checks the TCP header at the cursor and returns it with the
// offset and length of the segment's data, or NULL if the header is
// truncated or its data offset is inconsistent.
static __always_inline struct tcphdr *parse_tcp(struct cursor *c, struct packet *p,
						__u32 *payload_off, __u32 *payload_len)
{
	struct tcphdr *th = c->pos;
	if ((void *)(th + 1) > c->end)
		return NULL;
	__u32 doff = (th->doff_res >> TCP_DOFF_SHIFT) * TCP_DOFF_UNIT;
	if (doff < sizeof(*th) || doff > p->l4_len)
		return NULL;
	*payload_off = c->off + doff;
	*payload_len = p->l4_len - doff;
	return th;
}

#endif
