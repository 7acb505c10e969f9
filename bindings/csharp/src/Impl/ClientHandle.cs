using System;
using System.Runtime.InteropServices;

namespace Iotconn
{
    /// <summary>An iotconn_client_t*. Releasing it destroys the client; P/Invoke calls that take it hold a
    /// reference, so destruction waits until an iotconn_poll in progress returns.</summary>
    internal sealed class ClientHandle : SafeHandle
    {
        private ClientHandle() : base(IntPtr.Zero, true)
        {
        }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }

        protected override bool ReleaseHandle()
        {
            return NativeMethods.iotconn_client_destroy(handle) == 0;
        }
    }
}
