using System.Text.Json;
using Microsoft.ML.Peer.Data;

namespace Microsoft.ML.Peer.Tests.Data;

[TestClass]
public sealed class SpamAssassinCorpusTests
{
    private static string Json(string id, string group, string text) =>
        JsonSerializer.Serialize(new { id, group, checksum = new { type = "MD5", value = "0123" }, text });

    [TestMethod]
    public void ParsesAMailAndItsLabelFromItsGroup()
    {
        var spam = SpamAssassinCorpus.ParseMail(Json("00001", "spam-2", "From: a@b\nSubject: win\n\nbody"));
        Assert.AreEqual(new SpamAssassinMail("00001", "spam-2", "From: a@b\nSubject: win\n\nbody", true), spam);
        Assert.IsFalse(SpamAssassinCorpus.ParseMail(Json("00002", "hard-ham-1", "hi")).IsSpam);
    }

    [TestMethod]
    [DataRow("{\"id\":\"1\",\"group\":\"spam-1\"}", "'text'")]
    [DataRow("{\"id\":\"1\",\"group\":\"other\",\"text\":\"x\"}", "unknown group 'other'")]
    [DataRow("{\"id\":1,\"group\":\"spam-1\",\"text\":\"x\"}", "'id'")]
    [DataRow("[1]", "'id'")]
    [DataRow("{\"id\":", "not valid JSON")]
    public void MalformedMailsAreRejectedWithTheReason(string json, string reason)
    {
        var e = Assert.ThrowsExactly<InvalidDataException>(() => SpamAssassinCorpus.ParseMail(json, "m.json"));
        StringAssert.Contains(e.Message, reason);
        StringAssert.StartsWith(e.Message, "m.json");
    }

    [TestMethod]
    public void LoadsEveryGroupInAFixedOrder()
    {
        string root = Directory.CreateTempSubdirectory("spam-test-").FullName;
        try
        {
            foreach (var group in SpamAssassinCorpus.HamGroups.Concat(SpamAssassinCorpus.SpamGroups))
            {
                string folder = Directory.CreateDirectory(Path.Combine(root, "data", group)).FullName;
                File.WriteAllText(Path.Combine(folder, "00002.b.json"), Json("00002", group, $"second of {group}"));
                File.WriteAllText(Path.Combine(folder, "00001.a.json"), Json("00001", group, $"first of {group}"));
                File.WriteAllText(Path.Combine(folder, "00001.a.txt"), "the raw mail, ignored");
            }
            var mails = SpamAssassinCorpus.LoadFromDirectory(root);
            Assert.AreEqual(10, mails.Count);
            Assert.AreEqual("first of easy-ham-1", mails[0].Text);
            Assert.AreEqual("second of easy-ham-1", mails[1].Text);
            Assert.AreEqual("spam-2", mails[^1].Group);
            Assert.AreEqual(4, mails.Count(m => m.IsSpam));
            CollectionAssert.AreEqual(new[] { "easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2" },
                mails.Select(m => m.Group).Distinct().ToArray());

            File.WriteAllText(Path.Combine(root, "data", "spam-1", "00003.c.json"), Json("00003", "easy-ham-1", "misfiled"));
            StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => SpamAssassinCorpus.LoadFromDirectory(root)).Message,
                "lies in 'spam-1'");
            Directory.Delete(Path.Combine(root, "data", "hard-ham-1"), recursive: true);
            StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => SpamAssassinCorpus.LoadFromDirectory(root)).Message,
                "hard-ham-1");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [TestMethod]
    public void ScopedPackageNamesGetAFolderOfTheirOwn()
    {
        string root = Path.Combine(Path.GetTempPath(), "peer-cache-root");
        string folder = NpmPackageCache.GetPackageDirectory(SpamAssassinCorpus.PackageName, SpamAssassinCorpus.PackageVersion, root);
        Assert.AreEqual(Path.Combine(Path.GetFullPath(root), "stdlib+datasets-spam-assassin-0.2.3"), folder);
    }
}
