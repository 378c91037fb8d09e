/* The CLI's side of the control API: one HTTP request to the local
 * daemon's Unix socket, answered as JSON. */
#ifndef TRIAD_API_CLIENT_H
#define TRIAD_API_CLIENT_H

#include <jansson.h>

/* Sends method+path (with an optional JSON body) to the daemon at `socket`.
 * Returns the HTTP status (>0) with *out set to the parsed answer (or
 * NULL), or a negative errno when the daemon cannot be reached, with a
 * reason in err. */
int api_call(const char *socket, const char *method, const char *path, json_t *body, json_t **out,
             char *err, size_t errlen);

#endif
