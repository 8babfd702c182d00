// Writes a reference-only copy of an assembly in which every internal type and member is public.
// Only accessibility changes: private members stay private (so no new overloads or name clashes appear), and
// private protected members become protected, not public, so that overriding them (RowToRowTransformerBase's) does
// not put the overrides in the deriving assembly's public API. The copy is never shipped: the real assembly is what runs, reached through IgnoresAccessChecksTo.
using Mono.Cecil;

if (args.Length != 2)
{
    Console.Error.WriteLine("usage: AssemblyPublicizer <input.dll> <output.dll>");
    return 2;
}

string input = Path.GetFullPath(args[0]), output = Path.GetFullPath(args[1]);
if (!File.Exists(input))
{
    Console.Error.WriteLine($"AssemblyPublicizer: input assembly '{input}' does not exist.");
    return 1;
}

var resolver = new DefaultAssemblyResolver();
resolver.AddSearchDirectory(Path.GetDirectoryName(input)!);
using var assembly = AssemblyDefinition.ReadAssembly(input, new ReaderParameters { AssemblyResolver = resolver, ReadSymbols = false });
int changed = 0;
foreach (var type in assembly.MainModule.GetTypes())
{
    if (type.Name == "<Module>" || IsCompilerGenerated(type)) continue;
    if (type.IsNested)
    {
        if (type.IsNestedAssembly || type.IsNestedFamilyAndAssembly || type.IsNestedFamilyOrAssembly)
        {
            type.IsNestedPublic = true;
            changed++;
        }
    }
    else if (type.IsNotPublic)
    {
        type.IsPublic = true;
        changed++;
    }

    foreach (var method in type.Methods)
    {
        if (method.IsFamilyAndAssembly)
        {
            method.IsFamily = true;
            changed++;
        }
        else if (method.IsAssembly || method.IsFamilyOrAssembly)
        {
            method.IsPublic = true;
            changed++;
        }
    }

    foreach (var field in type.Fields)
    {
        if (field.IsFamilyAndAssembly)
        {
            field.IsFamily = true;
            changed++;
        }
        else if (field.IsAssembly || field.IsFamilyOrAssembly)
        {
            field.IsPublic = true;
            changed++;
        }
    }
}

Directory.CreateDirectory(Path.GetDirectoryName(output)!);
// Written beside the target and moved into place, so an interrupted build never leaves a torn copy.
string temporary = output + ".tmp";
assembly.Write(temporary);
File.Move(temporary, output, overwrite: true);
Console.WriteLine($"AssemblyPublicizer: {Path.GetFileName(input)} → {output} ({changed} types and members made public)");
return 0;

static bool IsCompilerGenerated(TypeDefinition type) =>
    type.CustomAttributes.Any(a => a.AttributeType.FullName == "System.Runtime.CompilerServices.CompilerGeneratedAttribute");
