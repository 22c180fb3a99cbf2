/* workers.h -- the supervisor process that runs N worker processes. */
#ifndef HERALD_WORKERS_H
#define HERALD_WORKERS_H

#include "worker.h"

/* Forks count workers from the prepared template and supervises them until a
 * SIGTERM/SIGINT drain finishes. Returns the process exit status: 0 when every
 * worker drained cleanly. */
int workers_supervise(const struct worker *tmpl, int count);

#endif
