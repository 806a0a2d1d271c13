//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// uapi.h: the few parts of the kernel's BPF interface (linux/bpf.h) that
// guard.c uses, restated so that it builds without kernel headers. Those
// include <asm/types.h>, which Debian installs only under an architecture's
// directory (/usr/include/x86_64-linux-gnu/asm), and clang -target bpf does
// not search there. Every value below is kernel ABI, which only grows, so a
// copy cannot go stale.

#ifndef EDGEGATE_UAPI_H
#define EDGEGATE_UAPI_H

// linux/types.h; bpf/bpf_helper_defs.h needs them before it is included.
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

// Map types (enum bpf_map_type).
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PROG_ARRAY 3
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_LPM_TRIE 11

// bpf_map_update_elem flags.
#define BPF_ANY 0      // create or replace
#define BPF_NOEXIST 1  // create only
#define BPF_EXIST 2    // replace only

// bpf_skb_store_bytes flag: keep skb->csum (CHECKSUM_COMPLETE) in step.
#define BPF_F_RECOMPUTE_CSUM 0x1

// Map creation flags: allocate entries on insert (required by LPM tries);
// let userspace mmap an array.
#define BPF_F_NO_PREALLOC 0x1
#define BPF_F_MMAPABLE 0x400

// XDP return codes (enum xdp_action).
#define XDP_DROP 1
#define XDP_PASS 2

// TCX return codes. TCX_NEXT rather than TCX_PASS lets programs attached
// after ours still run.
#define TCX_NEXT -1
#define TCX_DROP 2

// The XDP context, all of it.
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

// The skb context up to the last field guard.c reads (gso_size): the
// verifier checks each access by its offset, which must match the kernel's
// layout, and the fields after it are never touched. Fields guard.c does
// not read keep their size and place but lose their kernel types.
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	__u64 flow_keys; // __bpf_md_ptr(struct bpf_flow_keys *, flow_keys)
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	__u64 sk;        // __bpf_md_ptr(struct bpf_sock *, sk)
	__u32 gso_size;
};

#endif
