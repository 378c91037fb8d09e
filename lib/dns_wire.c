/* Walks a DNS message's sections (RFC 1035 4.1) without building anything:
 * names (labels or a compression pointer, which ends a name), questions,
 * then resource records, counting TSIG and OPT records at the end. */
#include "lib/dns_wire.h"

#define HEADER_SIZE 12
#define TYPE_OPT    41
#define TYPE_TSIG   250

static uint16_t u16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* Moves *pos past a name; false when it runs out or is not a name. */
static bool skip_name(const uint8_t *msg, size_t len, size_t *pos)
{
    size_t p = *pos;
    for (int labels = 0; labels < 128; labels++) {
        if (p >= len)
            return false;
        uint8_t b = msg[p];
        if ((b & 0xC0) == 0xC0) {
            if (p + 2 > len)
                return false;
            *pos = p + 2;
            return true;
        }
        if (b & 0xC0)
            return false; /* 0x40 and 0x80: no such label types in use */
        p += 1u + b;
        if (b == 0) {
            *pos = p;
            return true;
        }
    }
    return false;
}

bool dns_wire_acceptable(const uint8_t *msg, size_t len)
{
    if (!msg || len < HEADER_SIZE)
        return false;
    unsigned qd = u16(msg + 4), an = u16(msg + 6), ns = u16(msg + 8), ar = u16(msg + 10);
    size_t pos = HEADER_SIZE;
    for (unsigned i = 0; i < qd; i++) {
        if (!skip_name(msg, len, &pos) || pos + 4 > len)
            return false;
        pos += 4;
    }
    unsigned tsig = 0, opt = 0;
    unsigned rrs = an + ns + ar;
    for (unsigned i = 0; i < rrs; i++) {
        if (!skip_name(msg, len, &pos) || pos + 10 > len)
            return false;
        uint16_t type = u16(msg + pos);
        size_t rdlen = u16(msg + pos + 8);
        pos += 10;
        if (pos + rdlen > len)
            return false;
        pos += rdlen;
        if (i >= an + ns) {
            tsig += type == TYPE_TSIG;
            opt += type == TYPE_OPT;
        }
    }
    return tsig <= 1 && opt <= 1;
}

ldns_status dns_wire2pkt(ldns_pkt **pkt, const uint8_t *msg, size_t len)
{
    *pkt = NULL;
    if (!dns_wire_acceptable(msg, len))
        return LDNS_STATUS_WIRE_RDATA_ERR;
    return ldns_wire2pkt(pkt, msg, len);
}
