namespace Microsoft.ML
{
    /// <summary>Saving a model without ever losing the file it replaces.</summary>
    public static class PeerModelOperationsExtensions
    {
        /// <summary>
        /// Saves <paramref name="model"/> as <see cref="ModelOperationsCatalog.Save(ITransformer, DataViewSchema, string)"/>
        /// does, but to a temporary file beside <paramref name="filePath"/>, flushed to disk and then renamed over it. ML.NET's
        /// own Save truncates the target first, so a full disk or a crash midway leaves neither the old model nor the new
        /// one; here the old file stays intact until the new one is complete, and readers (a service reloading the model)
        /// never see half a file.
        /// </summary>
        /// <param name="catalog">The context's model operations (<c>mlContext.Model</c>).</param>
        /// <param name="model">The trained model.</param>
        /// <param name="inputSchema">The schema of the model's input (may be null, as with Save).</param>
        /// <param name="filePath">Where the model is written; replaced only by a complete file.</param>
        public static void SaveAtomically(this ModelOperationsCatalog catalog, ITransformer model, DataViewSchema? inputSchema,
            string filePath) =>
            SaveAtomically(catalog, model, inputSchema, filePath,
            path => new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None));

        /// <summary>The same, with the temporary file opened by <paramref name="create"/> (tests inject write failures).</summary>
        internal static void SaveAtomically(ModelOperationsCatalog catalog, ITransformer model, DataViewSchema? inputSchema,
            string filePath, Func<string, Stream> create)
        {
            ArgumentNullException.ThrowIfNull(catalog);
            ArgumentNullException.ThrowIfNull(model);
            ArgumentException.ThrowIfNullOrEmpty(filePath);
            string full = Path.GetFullPath(filePath);
            string folder = Path.GetDirectoryName(full)!;
            string temporary = Path.Combine(folder, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
            try
            {
                using (var stream = create(temporary))
                {
                    catalog.Save(model, inputSchema, stream);
                    if (stream is FileStream file) file.Flush(flushToDisk: true);
                }
                File.Move(temporary, full, overwrite: true);
            }
            catch
            {
                try { File.Delete(temporary); } catch (IOException) { } catch (UnauthorizedAccessException) { }
                throw;
            }
        }
    }
}
