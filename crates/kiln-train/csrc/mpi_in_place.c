/* MPI_IN_PLACE as a symbol Rust can read: mpi.h defines it as a macro whose value differs
   between MPI implementations, and rsmpi's mpi-sys does not export it. */
#include <mpi.h>

void *const KILN_MPI_IN_PLACE = MPI_IN_PLACE;
