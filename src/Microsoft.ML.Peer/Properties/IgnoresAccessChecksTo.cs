// The runtime honours this attribute (it is not in the BCL's public surface, so each assembly declares its own):
// it lets this assembly use Microsoft.ML.Core's internal model save/load API (VersionInfo, ModelLoadContext,
// ModelSaveContext members, LoadableClassAttribute) and Microsoft.ML.Data's RowToRowTransformerBase members and
// MapperBase (the transformers' row mapping), which it is compiled against through the publicized references made
// by eng/PublicizeMLNet.targets.
[assembly: System.Runtime.CompilerServices.IgnoresAccessChecksTo("Microsoft.ML.Core")]
[assembly: System.Runtime.CompilerServices.IgnoresAccessChecksTo("Microsoft.ML.Data")]

namespace System.Runtime.CompilerServices
{
    [AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
    internal sealed class IgnoresAccessChecksToAttribute : Attribute
    {
        public IgnoresAccessChecksToAttribute(string assemblyName) => AssemblyName = assemblyName;

        public string AssemblyName { get; }
    }
}
