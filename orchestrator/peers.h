/* Peer links: mutually authenticated TLS between the daemons of the sites.
 *
 * Each daemon dials every peer (outbound links, reconnected with backoff)
 * and accepts the peers' links (inbound). Messages go out on our outbound
 * link to a peer and arrive on its outbound link to us, so each direction
 * has one owner and no tie-breaking is needed. A peer certificate must name
 * the site (its peer_name); frames are length-prefixed JSON capped at
 * quorum.max_frame; a bigger frame closes the link.
 *
 * A link across a partition does not fail by itself (TCP just stalls), so a
 * peer not heard from for two peer timeouts has its outbound link closed and
 * dialled again: nothing stale stays queued for when the partition heals. */
#ifndef TRIAD_PEERS_H
#define TRIAD_PEERS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "orchestrator/config.h"

struct peers;

typedef void (*peers_msg_cb)(struct peers *p, int site, json_t *msg, void *arg);
typedef void (*peers_closed_cb)(struct peers *p, void *arg);

int peers_start(struct peers **out, uv_loop_t *loop, const struct config *cfg, peers_msg_cb on_msg,
                void *arg, char *err, size_t errlen);
/* Sends a message to a site (borrowed; serialised now). 0 or a negative
 * errno (-ENOTCONN when the link is down, or p is NULL: the message is
 * dropped). */
int peers_send(struct peers *p, int site, json_t *msg);
/* Whether our outbound link to a site is up. */
bool peers_link_up(const struct peers *p, int site);
/* Last time (monotonic ms) a message arrived from a site; 0 if never. */
int64_t peers_last_heard(const struct peers *p, int site);
/* Link details for status: "up (TLSv1.3)", "connecting", "down: reason". */
const char *peers_link_state(const struct peers *p, int site);
void peers_close(struct peers *p, peers_closed_cb cb, void *arg);

#endif
