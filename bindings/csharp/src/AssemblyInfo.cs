using System.Runtime.CompilerServices;

// The tests compare the binding's internal declarations (header version, native layouts) with include/iotconn.h.
[assembly: InternalsVisibleTo("Iotconn.Tests")]
