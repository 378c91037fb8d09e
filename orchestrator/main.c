/* triad: entry point. Dispatches to the command table in cli.c. */
#include "orchestrator/cli.h"

int main(int argc, char **argv)
{
    return cli_main(argc, argv);
}
