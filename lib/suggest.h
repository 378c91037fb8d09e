/* "Did you mean": the closest word to a misspelling among known words. */
#ifndef TRIAD_SUGGEST_H
#define TRIAD_SUGGEST_H

#include <stddef.h>

/* Edit distance (Damerau: a swap of two neighbours counts as one). */
size_t suggest_distance(const char *a, const char *b);
/* The closest of words[0..n) to `word`, or NULL if none is close enough. */
const char *suggest_closest(const char *word, const char *const *words, size_t n);

#endif
