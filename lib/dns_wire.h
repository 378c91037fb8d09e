/* A check on a raw DNS message before ldns parses it.
 *
 * ldns_wire2pkt keeps only the last TSIG (and OPT) record of the
 * additional section and leaks the earlier ones: a server, or anything
 * that can answer in its place, could make every answer leak. A message
 * with more than one of either is malformed anyway (RFC 8945 5.1: one
 * TSIG, the last record; RFC 6891 6.1.1: at most one OPT), so it is
 * refused before ldns sees it. */
#ifndef TRIAD_DNS_WIRE_H
#define TRIAD_DNS_WIRE_H

#include <ldns/ldns.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when the message's sections can be walked within len and its
 * additional section holds at most one TSIG and at most one OPT record. */
bool dns_wire_acceptable(const uint8_t *msg, size_t len);
/* ldns_wire2pkt for messages from the network: one that is not acceptable
 * is refused with LDNS_STATUS_WIRE_RDATA_ERR before ldns sees it. Every
 * parse of a received message goes through here. */
ldns_status dns_wire2pkt(ldns_pkt **pkt, const uint8_t *msg, size_t len);

#endif
