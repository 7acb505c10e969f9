using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;

namespace Iotconn
{
    /// <summary>Unmanaged copies of strings and bytes for one native call (the library copies what it keeps
    /// before returning); Dispose frees them all.</summary>
    internal sealed class NativeBlocks : IDisposable
    {
        private readonly List<IntPtr> blocks = new List<IntPtr>();

        public IntPtr Allocate(int bytes)
        {
            IntPtr block = Marshal.AllocHGlobal(bytes);
            blocks.Add(block);
            return block;
        }

        /// <summary>A copy of bytes; IntPtr.Zero for null or empty.</summary>
        public IntPtr Copy(byte[] bytes)
        {
            if (bytes == null || bytes.Length == 0)
            {
                return IntPtr.Zero;
            }
            IntPtr block = Allocate(bytes.Length);
            Marshal.Copy(bytes, 0, block, bytes.Length);
            return block;
        }

        /// <summary>A NUL-terminated UTF-8 copy of text; IntPtr.Zero for null.</summary>
        public IntPtr Utf8(string text)
        {
            return Copy(NativeMethods.ToUtf8(text));
        }

        public void Dispose()
        {
            foreach (IntPtr block in blocks)
            {
                Marshal.FreeHGlobal(block);
            }
            blocks.Clear();
        }
    }
}
