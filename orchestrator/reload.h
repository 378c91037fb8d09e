/* SIGHUP: re-reading the configuration and applying what can change
 * without a restart (reload.c says what and when). */
#ifndef TRIAD_RELOAD_H
#define TRIAD_RELOAD_H

#include <stdbool.h>

#include "lib/buf.h"
#include "orchestrator/config.h"

struct daemon;

/* Reads and checks the configuration file again; rejects it (logged, the
 * running configuration kept) when invalid or when a setting that needs a
 * restart changed; else applies it now or, when something still refers to
 * the parts it replaces, on a later reload_tick(). */
void reload_request(struct daemon *d);
/* Applies a waiting reload once nothing is in the way. */
void reload_tick(struct daemon *d);
/* A reload waits to be applied / is being applied (the probe scheduler
 * closes: its close callback ends the daemon's count when it stops). */
bool reload_pending(void);
bool reload_applying(void);
/* Frees a reload still waiting (the daemon is stopping). */
void reload_forget(void);

/* The top-level settings that differ between two configurations: those
 * that need a restart go to `restart`, those that apply live to `live`
 * (comma-separated; either may be NULL). Returns how many need a restart. */
int reload_classify(const struct config *cur, const struct config *fresh, struct buf *restart,
                    struct buf *live);

#endif
