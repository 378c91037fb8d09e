/* Command table and dispatch (skeleton; filled in by the foundation work). */
#include "orchestrator/cli.h"

#include <stdio.h>

int cli_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "triad: not implemented yet\n");
    return EXIT_NOT_IMPLEMENTED;
}
