// The runtime honours this attribute (it is not in the BCL's public surface, so each assembly declares its own):
// it lets this assembly use Microsoft.ML.Core's internal model save/load API (VersionInfo, ModelLoadContext,
// ModelSaveContext members, LoadableClassAttribute), which it is compiled against through the publicized
// reference made by eng/PublicizeMLNet.targets.
[assembly: System.Runtime.CompilerServices.IgnoresAccessChecksTo("Microsoft.ML.Core")]

namespace System.Runtime.CompilerServices
{
    [AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
    internal sealed class IgnoresAccessChecksToAttribute : Attribute
    {
        public IgnoresAccessChecksToAttribute(string assemblyName) => AssemblyName = assemblyName;

        public string AssemblyName { get; }
    }
}
